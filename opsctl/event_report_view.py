"""`opsctl report` as Markdown, for the incident ticket: findings first, then the fleet's and
each host's minutes, then the window's totals per host, vhost and upstream, then the error-log
events (nginx's upstream failures, php-fpm's max_children and slow requests)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

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


RECORD_COLUMNS = ("host", "minute (UTC)", "samples", "accept queue max", "of", "listener", "overflows/s max",
                  "CLOSE_WAIT max", "lost")


def _header(first: str, classes: list[str]) -> list[str]:
    names = columns(first, classes)
    return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]


def _row(label: str, figures: dict[str, Any], classes: list[str]) -> str:
    cells = [markdown_cell(label), str(figures["requests"]), *(str(figures["status"][c]) for c in classes),
             _pct(figures["share_pct"]["499"]), _pct(figures["share_pct"]["504"]),
             *(_num(figures["upstream_ms"][q]) for q in LATENCY)]
    return "| " + " | ".join(cells) + " |"


def _minutes(title: str, group: dict[str, Any], classes: list[str]) -> list[str]:
    lines = [title, "", *_header("minute (UTC)", classes)]
    lines += [_row(m["minute"][11:16], m, classes) for m in group["minutes"]]
    return lines + [_row("all", group, classes), ""]


def _totals(title: str, groups: dict[str, dict[str, Any]], first: str, classes: list[str]) -> list[str]:
    if not groups:
        return []
    return [title, "", *_header(first, classes), *(_row(name, g, classes) for name, g in groups.items()), ""]


def _record(record: dict[str, list[dict[str, Any]]]) -> list[str]:
    lines = ["## opsctl watch record per minute", "", "| " + " | ".join(RECORD_COLUMNS) + " |",
             "|" + "---|" * len(RECORD_COLUMNS)]
    for host, minutes in record.items():
        lines += [f"| {markdown_cell(host)} | {m['minute'][11:16]} | {m['samples']} | {_num(m['queue_max'])} | "
                  f"{_num(m['queue_limit'])} | {markdown_cell(_num(m['queue_at']))} | {_num(m['overflows_ps_max'])} | "
                  f"{_num(m['close_wait_max'])} | {m['lost']} |" for m in minutes]
    return lines + [""]


def _events(found: dict[str, Any]) -> list[str]:
    """Each host x kind x subject's total, then every minute's counts."""
    kinds = found["kinds"]
    lines = ["## Error-log events", ""]
    if not found["totals"]:
        lines += ["No upstream failures in nginx's error logs and no max_children or slow-request events in "
                  "php-fpm's logs in the window.", ""]
    else:
        lines += ["| host | event | subject | count | minutes | first (UTC) | last (UTC) |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {markdown_cell(t['host'])} | {markdown_cell(kinds[t['kind']])} | {markdown_cell(t['subject'])} | "
                  f"{t['count']} | {t['minutes']} | {hhmm(t['first'])} | {hhmm(t['last'])} |" for t in found["totals"]]
        lines += ["", "## Error-log events per minute", "",
                  "| minute (UTC) | host | event | subject | vhost / script / setting | count |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['minute'][11:16]} | {markdown_cell(r['host'])} | {markdown_cell(kinds[r['kind']])} | "
                  f"{markdown_cell(r['subject'])} | {markdown_cell(r['detail'])} | {r['count']} |"
                  for r in sorted(found["rows"], key=lambda r: (r["epoch"], r["host"]))]
        lines += [""]
    read = found["read"]
    lines += [f"Error and slow logs: {sum(len(r['files']) for r in read)} file(s), {sum(r['lines'] for r in read)} "
              f"line(s) read, {sum(r['unreadable'] for r in read)} unreadable.", ""]
    return lines


def hhmm(epoch: float) -> str:
    """HH:MM (UTC) of EPOCH."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M")


def markdown(result: dict[str, Any]) -> str:
    classes = result["classes"]
    fleet = result["fleet"].get("fleet")
    read = result["read"]
    ok = [r for r in read if r["ok"]]
    lines = [f"# opsctl report: {markdown_cell(result['inventory'])}", "",
             f"{window_text(result)}: "
             f"{fleet['requests'] if fleet else 0} requests on {len(ok)} of {len(read)} host(s) "
             f"({sum(r['lines'] for r in ok)} log lines read, {sum(r['unreadable'] for r in ok)} unreadable). "
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
    failed = [r for r in read if not r["ok"]]
    if failed:
        lines += ["## Hosts not read", "", "| host | error |", "|---|---|"]
        lines += [f"| {markdown_cell(r['host'])} | {markdown_cell(r['error'])} |" for r in failed] + [""]
    return "\n".join(lines)
