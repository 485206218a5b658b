"""The watch screen: fleet totals on top, then hosts worst first, as many as the terminal has
rows for (and a count of the rest). A figure past its threshold is red (bad) or yellow (warn)."""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from opsctl.watch import figures as fg
from opsctl.watch.board import Board, HostState

SPARK = 8          # characters per sparkline (the last minute, binned by its largest value)


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def _cell(text: str, level: str | None) -> Text:
    return Text(text, style={"bad": "bold red", "warn": "yellow"}.get(level or "", ""))


def _queue(fig: fg.Figures) -> str:
    worst = fig.worst_listener
    return "-" if worst is None else f"{worst.queue}/{worst.limit}"


def _latency(p50: float | None, p99: float | None) -> str:
    return "-" if p50 is None else f"{p50:.0f}/{_num(p99)}"


def _fpm(active: int | None, idle: int | None, queue: int | None) -> str:
    return "-" if active is None else f"{active}/{_num(idle)}/{_num(queue)}"


# (name, justify, minimum terminal width to show it): the least needed columns go first when narrow.
COLUMNS = (("host", "left", 0), ("req/s", "right", 0), ("req/s 1m", "left", 0), ("2xx", "right", 120),
           ("499", "right", 0), ("5xx", "right", 0), ("p50/p99", "right", 0), ("queue", "right", 0),
           ("queue 1m", "left", 0), ("ovf/s", "right", 0), ("CW", "right", 0), ("fpm a/i/q", "right", 0),
           ("mcr", "right", 0), ("iow", "right", 0), ("load", "right", 120), ("mem", "right", 120))


def _shown(width: int) -> list[int]:
    return [i for i, (_, _, least) in enumerate(COLUMNS) if width >= least]


def _host_row(host: HostState, lost: bool) -> list[RenderableType]:
    fig = host.figures
    if lost or fig is None:
        state = Text("LOST", style="bold red") if lost else Text(host.state, style="dim")
        return [Text(host.name, style="bold red" if lost else ""), state, *[""] * (len(COLUMNS) - 2)]
    level = fg.alerts(fig)
    return [
        host.name, _num(fig.rps, 1), fg.sparkline(list(host.series["rps"]), SPARK),
        _pct(fig.share("2xx")), _cell(_pct(fig.share("499")), level.get("499")),
        _cell(_pct(fig.share_5xx), level.get("5xx")), _latency(fig.p50_ms, fig.p99_ms),
        _cell(_queue(fig), level.get("queue")), fg.sparkline(list(host.series["queue"]), SPARK, top=1.0),
        _cell(_num(fig.overflows_ps, 1), level.get("overflows")),
        _cell(_num(fig.close_wait) + ("↑" if fig.close_wait_growing else ""), level.get("close_wait")),
        _cell(_fpm(fig.fpm_active, fig.fpm_idle, fig.fpm_listen_queue), level.get("fpm")),
        _cell(_num(fig.fpm_max_children), level.get("fpm")),
        _cell(_num(fig.iowait_pct, 0) + ("%" if fig.iowait_pct is not None else ""), level.get("iowait")),
        f"{fig.load1:.2f}", f"{fig.mem_used_pct:.0f}%",
    ]


def _fleet_lines(board: Board, total: fg.Fleet) -> list[Text]:
    spark = {name: fg.sparkline(list(values), SPARK, top=1.0 if name == "queue" else None)
             for name, values in board.fleet_series.items()}
    five = (sum(total.statuses.get(c, 0) for c in ("502", "503", "504")) / total.requests) if total.requests else None

    def part(text: str, bad: bool = False) -> Text:
        return Text(text + "   ", style="bold red" if bad else "")

    first = Text.assemble(part(f"fleet: {total.answering}/{total.hosts} hosts answer"),
                          part(f"{total.lost} lost", bool(total.lost)),
                          part(f"req/s {_num(total.rps, 1)} {spark['rps']}"),
                          part(f"499 {_pct(total.share('499'))} {spark['499']}",
                               (total.share("499") or 0) > fg.SHARE_499_BAD),
                          part(f"5xx {_pct(five)} {spark['5xx']}", (five or 0) > fg.SHARE_5XX_BAD))
    second = Text.assemble(part(f"p50/p99 {_latency(total.p50_ms, total.p99_ms)} ms"),
                           part(f"worst queue {100 * total.queue_ratio:.0f}% {spark['queue']}",
                                total.queue_ratio > fg.QUEUE_RATIO_BAD),
                           part(f"overflows/s {_num(total.overflows_ps, 1)} {spark['overflows']}",
                                (total.overflows_ps or 0) + (total.drops_ps or 0) > 0),
                           part(f"fpm active {_num(total.fpm_active)} {spark['fpm_active']} idle "
                                f"{_num(total.fpm_idle)} queue {_num(total.fpm_listen_queue)}"),
                           part(f"CW {_num(total.close_wait)}"))
    return [first, second]


KEYS = ("queue: fullest accept queue/limit (nginx, php-fpm); ovf/s: ListenOverflows+Drops/s; CW: CLOSE_WAIT on "
        "php-fpm TCP (↑ growing); fpm a/i/q: active/idle/listen queue; mcr: max children reached; Ctrl-C quits")


def render(board: Board, now: float, height: int, title: str, width: int = 100) -> RenderableType:
    """The whole screen for a terminal of HEIGHT lines and WIDTH columns."""
    total = board.fleet(now)
    head = [Text(title, style="bold"), *_fleet_lines(board, total)]
    ordered = board.ordered(now)
    lost = [h for h in ordered if board.lost(h.name, now)]
    keys = Text(KEYS, style="dim")
    # Whatever is not a host row: the head, the table's header, the footers, the keys.
    chrome = sum(len(t.wrap(Console(width=width), width)) for t in (*head, keys)) + 4
    rows = max(height - chrome, 1)
    shown, rest = ordered[:rows], ordered[rows:]
    columns = _shown(width)
    table = Table(box=None, padding=(0, 1), header_style="bold")
    for i in columns:
        name, justify, _ = COLUMNS[i]
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for host in shown:
        cells = _host_row(host, board.lost(host.name, now))
        table.add_row(*[cells[i] for i in columns])
    more = Text(f"… and {len(rest)} more hosts, none worse than those above" if rest else "", style="dim")
    why = Text("; ".join(f"{h.name}: {h.error or 'no sample within two intervals'}" for h in lost[:5])
               + (f"; and {len(lost) - 5} more" if len(lost) > 5 else ""), style="red", overflow="ellipsis",
               no_wrap=True)
    return Group(*head, table, more, why if lost else Text(""), keys)
