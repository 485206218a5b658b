"""The watch screen: fleet totals on top, then hosts worst first, as many as the terminal has
rows for (and a count of the rest). A figure past its threshold is red (bad) or yellow (warn)."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from opsctl.watch import figures as fg
from opsctl.watch.board import Board, HostState

SPARK = 10          # characters per sparkline (the last minute, binned by its largest value)
CHROME = 9          # lines that are not host rows: title, fleet table, header, footer


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


def _columns(table: Table) -> None:
    for name, justify in (("host", "left"), ("req/s", "right"), ("req/s 1m", "left"), ("2xx", "right"),
                          ("499", "right"), ("5xx", "right"), ("p50/p99 ms", "right"), ("queue", "right"),
                          ("queue 1m", "left"), ("ovf/s", "right"), ("CW", "right"), ("fpm a/i/q", "right"),
                          ("mcr", "right"), ("iow", "right"), ("load", "right"), ("mem", "right")):
        table.add_column(name, justify=justify, no_wrap=True)


def _host_row(host: HostState, lost: bool) -> list[RenderableType]:
    fig = host.figures
    if lost or fig is None:
        state = "LOST" if lost else host.state
        reason = host.error or ("waiting for the first sample" if fig is None else "")
        return [Text(host.name, style="bold red" if lost else ""), _cell(state, "bad" if lost else None),
                Text(reason[:60], style="dim"), *[""] * 13]
    level = fg.alerts(fig)
    return [
        host.name, _num(fig.rps, 1), fg.sparkline(list(host.series["rps"]), SPARK),
        _pct(fig.share("2xx")), _cell(_pct(fig.share("499")), level.get("499")),
        _cell(_pct(fig.share_5xx), level.get("5xx")), _latency(fig.p50_ms, fig.p99_ms),
        _cell(_queue(fig), level.get("queue")), fg.sparkline(list(host.series["queue"]), SPARK),
        _cell(_num(fig.overflows_ps, 1), level.get("overflows")),
        _cell(_num(fig.close_wait) + ("↑" if fig.close_wait_growing else ""), level.get("close_wait")),
        _cell(_fpm(fig.fpm_active, fig.fpm_idle, fig.fpm_listen_queue), level.get("fpm")),
        _cell(_num(fig.fpm_max_children), level.get("fpm")),
        _cell(_num(fig.iowait_pct, 0) + ("%" if fig.iowait_pct is not None else ""), level.get("iowait")),
        f"{fig.load1:.2f}", f"{fig.mem_used_pct:.0f}%",
    ]


def _fleet_line(board: Board, total: fg.Fleet) -> Table:
    grid = Table.grid(padding=(0, 2))
    for _ in range(4):
        grid.add_column(no_wrap=True)
    spark = {name: fg.sparkline(list(values), SPARK) for name, values in board.fleet_series.items()}
    five = (sum(total.statuses.get(c, 0) for c in ("502", "503", "504")) / total.requests) if total.requests else None
    lost = Text(f"{total.lost} lost", style="bold red" if total.lost else "")
    grid.add_row(Text.assemble(f"fleet {total.answering}/{total.hosts} answering, ", lost),
                 f"req/s {_num(total.rps, 1)} {spark['rps']}",
                 _cell(f"499 {_pct(total.share('499'))} {spark['499']}",
                       "bad" if (total.share("499") or 0) > fg.SHARE_499_BAD else None),
                 _cell(f"5xx {_pct(five)} {spark['5xx']}", "bad" if (five or 0) > fg.SHARE_5XX_BAD else None))
    grid.add_row(f"p50/p99 {_latency(total.p50_ms, total.p99_ms)} ms",
                 _cell(f"worst queue {100 * total.queue_ratio:.0f}% {spark['queue']}",
                       "bad" if total.queue_ratio > fg.QUEUE_RATIO_BAD else None),
                 _cell(f"overflows/s {_num(total.overflows_ps, 1)} {spark['overflows']}",
                       "bad" if (total.overflows_ps or 0) + (total.drops_ps or 0) > 0 else None),
                 f"fpm active {_num(total.fpm_active)} {spark['fpm_active']} idle {_num(total.fpm_idle)} "
                 f"queue {_num(total.fpm_listen_queue)} CW {_num(total.close_wait)}")
    return grid


def render(board: Board, now: float, height: int, title: str) -> RenderableType:
    """The whole screen for a terminal of HEIGHT lines."""
    total = board.fleet(now)
    rows = max(height - CHROME, 1)
    ordered = board.ordered(now)
    shown, rest = ordered[:rows], ordered[rows:]
    table = Table(box=None, padding=(0, 1), header_style="bold", expand=False)
    _columns(table)
    for host in shown:
        table.add_row(*_host_row(host, board.lost(host.name, now)))
    footer = Text(f"… and {len(rest)} more hosts, better than these "
                  f"({sum(board.lost(h.name, now) for h in rest)} lost)" if rest else "", style="dim")
    keys = Text("queue: worst accept queue/limit of nginx and php-fpm listeners; ovf/s: ListenOverflows/s; "
                "CW: CLOSE_WAIT on php-fpm TCP listeners (↑ growing); fpm a/i/q: active/idle/listen queue; "
                "mcr: max children reached; Ctrl-C quits", style="dim")
    return Group(Text(title, style="bold"), _fleet_line(board, total), Text(""), table, footer, keys)
