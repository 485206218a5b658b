"""`opsctl report` as Markdown, for the incident ticket: findings first, then the fleet's and
each host's minutes, then the window's totals per host, vhost and upstream, then the error-log
events (nginx's upstream failures, php-fpm's max_children and slow requests)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from opsctl.safetext import markdown_cell

LATENCY = ("p50", "p90", "p99", "max")


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def window_text(result: dict[str, Any]) -> str:
    return f"{_when(result['since'])} to {_when(result['until'])}"


def _num(value: Any) -> str:
    return "-" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def columns(first: str, classes: list[str]) -> list[str]:
    """A table of groups' or minutes' figures: what each row shows (the HTML's too)."""
    return [first, "requests", *classes, "499 %", "504 %", *(f"upstream {q} ms" for q in LATENCY)]


def figure_cells(figures: dict[str, Any], classes: list[str]) -> list[str]:
    """A group's or a minute's figures, the cells after its label in every table (plain text)."""
    return [str(figures["requests"]), *(str(figures["status"][c]) for c in classes),
            _pct(figures["share_pct"]["499"]), _pct(figures["share_pct"]["504"]),
            *(_num(figures["upstream_ms"][q]) for q in LATENCY)]


RECORD_COLUMNS = ("host", "minute (UTC)", "samples", "accept queue max", "of", "listener", "overflows/s max",
                  "CLOSE_WAIT max", "lost")


def record_cells(host: str, m: dict[str, Any]) -> list[str]:
    """A host's minute of the watch record under RECORD_COLUMNS (plain text)."""
    return [host, m["minute"][11:16], str(m["samples"]), _num(m["queue_max"]), _num(m["queue_limit"]),
            _num(m["queue_at"]), _num(m["overflows_ps_max"]), _num(m["close_wait_max"]), str(m["lost"])]


EVENT_COLUMNS = ("host", "event", "subject", "count", "minutes", "first (UTC)", "last (UTC)")
EVENT_MINUTE_COLUMNS = ("minute (UTC)", "host", "event", "subject", "vhost / script / setting", "count")
NO_EVENTS = ("No upstream failures in nginx's error logs and no max_children or slow-request events in "
             "php-fpm's logs in the window.")


def event_totals(found: dict[str, Any]) -> list[list[str]]:
    """Each host x kind x subject's total under EVENT_COLUMNS (plain text)."""
    kinds = found["kinds"]
    return [[t["host"], kinds[t["kind"]], t["subject"], str(t["count"]), str(t["minutes"]), hhmm(t["first"]),
             hhmm(t["last"])] for t in found["totals"]]


def event_minutes(found: dict[str, Any]) -> list[list[str]]:
    """Every minute's events, in time order, under EVENT_MINUTE_COLUMNS (plain text)."""
    kinds = found["kinds"]
    return [[r["minute"][11:16], r["host"], kinds[r["kind"]], r["subject"], _num(r["detail"]), str(r["count"])]
            for r in sorted(found["rows"], key=lambda r: (r["epoch"], r["host"]))]


def events_read(found: dict[str, Any]) -> str:
    read = found["read"]
    return (f"Error and slow logs: {sum(len(r['files']) for r in read)} file(s), {sum(r['lines'] for r in read)} "
            f"line(s) read, {sum(r['unreadable'] for r in read)} unreadable.")


def requests_read(result: dict[str, Any]) -> str:
    """How many requests the report counts, on how many hosts, from how many lines."""
    fleet = result["fleet"].get("fleet")
    read = result["read"]
    ok = [r for r in read if r["ok"]]
    return (f"{fleet['requests'] if fleet else 0} requests on {len(ok)} of {len(read)} host(s) "
            f"({sum(r['lines'] for r in ok)} log lines read, {sum(r['unreadable'] for r in ok)} unreadable)")


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(map(markdown_cell, cells)) + " |"


def _md_header(names: Iterable[str]) -> list[str]:
    names = list(names)
    return [_md_row(names), "|" + "---|" * len(names)]


def _minutes(title: str, group: dict[str, Any], classes: list[str]) -> list[str]:
    lines = [title, "", *_md_header(columns("minute (UTC)", classes))]
    lines += [_md_row([m["minute"][11:16], *figure_cells(m, classes)]) for m in group["minutes"]]
    return lines + [_md_row(["all", *figure_cells(group, classes)]), ""]


def _totals(title: str, groups: dict[str, dict[str, Any]], first: str, classes: list[str]) -> list[str]:
    if not groups:
        return []
    return [title, "", *_md_header(columns(first, classes)),
            *(_md_row([name, *figure_cells(g, classes)]) for name, g in groups.items()), ""]


def _record(record: dict[str, list[dict[str, Any]]]) -> list[str]:
    return ["## opsctl watch record per minute", "", *_md_header(RECORD_COLUMNS),
            *(_md_row(record_cells(host, m)) for host, minutes in record.items() for m in minutes), ""]


def _events(found: dict[str, Any]) -> list[str]:
    """Each host x kind x subject's total, then every minute's counts."""
    lines = ["## Error-log events", ""]
    if not found["totals"]:
        lines += [NO_EVENTS, ""]
    else:
        lines += [*_md_header(EVENT_COLUMNS), *map(_md_row, event_totals(found))]
        lines += ["", "## Error-log events per minute", "", *_md_header(EVENT_MINUTE_COLUMNS),
                  *map(_md_row, event_minutes(found)), ""]
    return lines + [events_read(found), ""]


def hhmm(epoch: float) -> str:
    """HH:MM (UTC) of EPOCH."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M")


def markdown(result: dict[str, Any]) -> str:
    classes = result["classes"]
    fleet = result["fleet"].get("fleet")
    lines = [f"# opsctl report: {markdown_cell(result['inventory'])}", "",
             f"{window_text(result)}: {requests_read(result)}. "
             "499: the client gave up; 504: nginx gave up on the upstream. Upstream times are every attempt's.", ""]
    lines += ["## Findings", ""] + [f"- {markdown_cell(f)}" for f in result["findings"] or ["no failures in the window"]] + [""]
    if fleet:
        lines += _minutes("## Fleet per minute", fleet, classes)
    lines += _totals("## Per host", result["hosts"], "host", classes)
    lines += _totals("## Per vhost", result["vhosts"], "vhost", classes)
    lines += _totals("## Per upstream", result["upstreams"], "upstream", classes)
    for host, group in result["hosts"].items():
        lines += _minutes(f"## {markdown_cell(host)} per minute", group, classes)
    if "events" in result:
        lines += _events(result["events"])
    if "record" in result:
        lines += _record(result["record"])
    failed = [r for r in result["read"] if not r["ok"]]
    if failed:
        lines += ["## Hosts not read", "", *_md_header(("host", "error")),
                  *(_md_row([r["host"], r["error"]]) for r in failed), ""]
    return "\n".join(lines)
