"""`opsctl report`: the event afterwards, from the hosts' nginx access logs, nginx's error logs
and php-fpm's error and slow logs.

Each host counts its own requests per minute x vhost x upstream x status class and keeps latency
histograms per minute, and counts its error-log events per minute x kind x subject (log_report.py,
sent by opsctl.host_logs); here those aggregates are rolled up fleet-wide, per host, per vhost and
per upstream, and the findings are stated in numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

from ansible_collections.opsctl.fleet.plugins.plugin_utils import events, log_profile
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip
from ansible_collections.opsctl.fleet.plugins.plugin_utils.error_log import KINDS
from ansible_collections.opsctl.fleet.plugins.plugin_utils.log_report import CLASSES, MINUTE

from opsctl import host_logs
from opsctl.errors import OpsctlError
from opsctl.host_logs import DEFAULT_RATE_MB, HostFigures
from opsctl.inventory import Inventory
from opsctl.probe import probe_script
from opsctl.profile_suggest import parse_span

FPM_SECTIONS = "masters php_fpm_tt"   # what the hosts' php-fpm log paths are read from
QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
FAILURES = ("499", "502", "503", "504")   # the classes a finding is stated for
FINDING_SHARE = 0.01    # a minute counts towards a finding when this share of its requests failed so
QUEUE_FINDING_FILL = 0.5  # an accept queue's peak is a finding from this share of its limit on
SHARES = ("499", "504")  # clients that gave up, next to nginx giving up on the upstream
# A grouping of the host's rows: (host, vhost, upstream) -> the group's name.
Grouping = Callable[[str, str, str], str]
GROUPINGS: dict[str, Grouping] = {
    "fleet": lambda host, vhost, upstream: "fleet",
    "hosts": lambda host, vhost, upstream: host,
    "vhosts": lambda host, vhost, upstream: vhost,
    "upstreams": lambda host, vhost, upstream: upstream,
}


@dataclass(frozen=True)
class ReportOptions:
    since: float          # epoch seconds, a whole minute or not
    until: float
    rate_mb: float = DEFAULT_RATE_MB
    timeout_s: float = 600.0
    record: str | None = None   # an `opsctl watch --record` file for the timeline


def parse_time(text: str, option: str, now: float) -> float:
    """Epoch seconds of --since / --until: an ISO 8601 time (UTC when it names no zone), or a
    duration meaning that long before NOW (30m, 2h)."""
    value = text.strip()
    if not (value[:1].isdigit() and any(c in value for c in "-:T")):
        return now - parse_span(value, option)
    try:
        return events.parse_start(value, timezone.utc, option).timestamp()
    except events.WindowError:
        raise OpsctlError(f"{option} {clip(text)}: expected a time like 2026-12-06T10:00 or a duration like 2h") from None


def parse_window(since: str, until: str | None, now: float | None = None) -> tuple[float, float]:
    now = time.time() if now is None else now
    start = parse_time(since, "--since", now)
    end = now if until is None else parse_time(until, "--until", now)
    if end <= start:
        raise OpsctlError(f"--until {clip(until or 'now')}: must be after --since {clip(since)}")
    return start, end


def host_script(opts: ReportOptions, paths: tuple[str, ...] = (),
                error_paths: dict[str, list[str]] | None = None) -> bytes:
    """PATHS: these files instead of the access logs nginx names, ERROR_PATHS (reader name:
    nginx, fpm, slow -> files) instead of the error and slow logs (tests). Without PATHS the
    host finds its php-fpm masters by the readiness probe's discovery, sent along."""
    params: dict[str, Any] = {"since": opts.since, "until": opts.until, "rate": opts.rate_mb * 1_000_000,
                              "paths": list(paths), "error_paths": error_paths or {}}
    if not paths:
        params["fpm_probe"] = probe_script(FPM_SECTIONS).decode()
    return host_logs.host_script(("access_log", "log_profile", "error_log", "log_report"), params,
                                 needs=("durations", "hosttext", "fpm_facts", "log_facts"))


def measure(inv: Inventory, opts: ReportOptions, on_host: Callable[[HostFigures], None] | None = None) -> list[HostFigures]:
    return host_logs.run_on_hosts(inv, host_script(opts), opts.timeout_s, on_host)


def minute_text(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def clock(epoch: float) -> str:
    """HH:MM (UTC), with the seconds when EPOCH is no whole minute (a window's own ends)."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%H:%M" if epoch % MINUTE == 0 else "%H:%M:%S")


def percentiles(counts: dict[int, int]) -> dict[str, int | None]:
    out = {name: log_profile.percentile(counts, q) for name, q in QUANTILES}
    out["max"] = max(counts) if counts else None
    out["count"] = sum(counts.values())
    return out


def _share(part: int, total: int) -> float | None:
    return round(100 * part / total, 2) if total else None


class _Group:
    """One group's counts and histograms per minute."""

    def __init__(self) -> None:
        self.counts: dict[int, dict[str, int]] = {}
        self.request_ms: dict[int, dict[int, int]] = {}
        self.upstream_ms: dict[int, dict[int, int]] = {}

    def view(self) -> dict[str, Any]:
        minutes = sorted(set(self.counts) | set(self.upstream_ms) | set(self.request_ms))
        # Every minute between the first and the last: a minute with no request is the dead time.
        span = range(minutes[0], minutes[-1] + MINUTE, MINUTE) if minutes else range(0)
        rows = [_figures(m, self.counts.get(m, {}), self.request_ms.get(m, {}), self.upstream_ms.get(m, {}))
                for m in span]
        total = _figures(None, _sum_counts(self.counts.values()), log_profile.merge(self.request_ms.values()),
                         log_profile.merge(self.upstream_ms.values()))
        return {**total, "minutes": rows}


def _sum_counts(rows: Iterable[dict[str, int]]) -> dict[str, int]:
    out = dict.fromkeys(CLASSES, 0)
    for row in rows:
        for cls, n in row.items():
            out[cls] += n
    return out


def _figures(minute: int | None, counts: dict[str, int], request_ms: dict[int, int],
             upstream_ms: dict[int, int]) -> dict[str, Any]:
    counts = {cls: counts.get(cls, 0) for cls in CLASSES}
    total = sum(counts.values())
    out: dict[str, Any] = {} if minute is None else {"minute": minute_text(minute), "epoch": minute}
    out.update(requests=total, status=counts, share_pct={cls: _share(counts[cls], total) for cls in SHARES},
               upstream_ms=percentiles(upstream_ms), request_ms=percentiles(request_ms))
    return out


def _int_keyed(figures: list[HostFigures]) -> list[HostFigures]:
    """The hosts that answered, their histograms keyed by int (JSON made the ms strings) once,
    not once per grouping."""
    out = []
    for fig in (f for f in figures if f.ok):
        data = dict(fig.data)
        for key in ("request_ms", "upstream_ms"):
            data[key] = [(minute, vhost, upstream, {int(v): n for v, n in hist.items()})
                         for minute, vhost, upstream, hist in fig.data[key]]
        out.append(HostFigures(fig.name, True, data=data))
    return out


def rollup(figures: list[HostFigures], grouping: Grouping) -> dict[str, dict[str, Any]]:
    """The hosts' rows (int-keyed: _int_keyed) summed into the groups GROUPING names, each with
    its per-minute timeline."""
    groups: dict[str, _Group] = {}
    for fig in figures:
        for minute, vhost, upstream, cls, n in fig.data["counts"]:
            per = groups.setdefault(grouping(fig.name, vhost, upstream), _Group()).counts.setdefault(minute, {})
            per[cls] = per.get(cls, 0) + n
        for key in ("request_ms", "upstream_ms"):
            for minute, vhost, upstream, hist in fig.data[key]:
                group = groups.setdefault(grouping(fig.name, vhost, upstream), _Group())
                # Added into the group's own histogram, in line: a fresh merge per row is
                # quadratic in the hosts (52 s for 500 hosts x 60 minutes), a call per bucket
                # doubles the time.
                merged = getattr(group, key).setdefault(minute, {})
                for value, n in hist.items():
                    merged[value] = merged.get(value, 0) + n
    return {name: groups[name].view() for name in sorted(groups)}


def _runs(minutes: list[dict[str, Any]], cls: str) -> list[list[dict[str, Any]]]:
    """Consecutive minutes where CLS was at least FINDING_SHARE of the requests."""
    runs: list[list[dict[str, Any]]] = []
    previous = None
    for row in minutes:
        bad = row["requests"] and row["status"][cls] and row["status"][cls] >= FINDING_SHARE * row["requests"]
        if bad:
            if previous is not None and row["epoch"] == previous + MINUTE and runs:
                runs[-1].append(row)
            else:
                runs.append([row])
            previous = row["epoch"]
    return runs


def between(first: int, last: int, opts: ReportOptions) -> str:
    """`between HH:MM and HH:MM` of a stretch from minute FIRST to the end of minute LAST, its
    ends within the window."""
    return f"between {clock(max(first, opts.since))} and {clock(min(last + MINUTE, opts.until))}"


def findings_for(subject: str, group: dict[str, Any], opts: ReportOptions) -> list[str]:
    """The worst stretch of each failure class, in numbers (its ends within the window); the
    worst minute's upstream p99."""
    out = []
    for cls in FAILURES:
        runs = _runs(group["minutes"], cls)
        if not runs:
            continue
        worst = max(runs, key=lambda run: sum(r["status"][cls] for r in run))
        bad, total = sum(r["status"][cls] for r in worst), sum(r["requests"] for r in worst)
        out.append(f"{subject}: {100 * bad / total:.1f}% of requests ended in {cls} "
                   f"{between(worst[0]['epoch'], worst[-1]['epoch'], opts)} ({bad} of {total})")
    timed = [r for r in group["minutes"] if r["upstream_ms"]["p99"] is not None]
    if timed:
        top = max(timed, key=lambda r: r["upstream_ms"]["p99"])
        out.append(f"{subject}: upstream response time p99 peaked at {top['upstream_ms']['p99']} ms in the minute "
                   f"from {clock(top['epoch'])} (max {top['upstream_ms']['max']} ms)")
    return out


# How a finding states each kind of event: {host}, {subject}, {count}, {minutes}, {between}, {detail}.
EVENT_FINDINGS = {
    "upstream_disabled": "{host}: nginx marked {subject} failed {count} time(s) in {minutes} minute(s) {between}",
    "upstream_timed_out": "{host}: upstream {subject} timed out (110) {count} time(s) in {minutes} minute(s) {between}",
    "upstream_backlog_full": "{host}: the listen backlog of {subject} was full (connect() failed, 11) {count} time(s) "
                             "in {minutes} minute(s) {between}",
    "upstream_connect_failed": "{host}: connect() to {subject} failed {count} time(s) in {minutes} minute(s) {between}",
    "no_live_upstreams": "{host}: no live upstreams in {subject} {count} time(s) in {minutes} minute(s) {between}",
    "worker_connections": "{host}: nginx ran out of connections ({subject}) {count} time(s) in {minutes} minute(s) "
                          "{between}",
    "open_files": "{host}: nginx ran out of file descriptors (24: Too many open files) {count} time(s) in {minutes} "
                  "minute(s) {between}",
    "shed": "{host}: nginx shed {count} request(s) by its limit ({subject}) in {minutes} minute(s) {between}",
    "upstream_closed": "{host}: upstream {subject} closed or reset the connection {count} time(s) in {minutes} "
                       "minute(s) {between}",
    "max_children": "{host}: php-fpm pool {subject} reached pm.max_children ({detail}) in {minutes} minute(s) "
                    "{between}, {count} warning(s)",
    "slow_warning": "{host}: php-fpm pool {subject} logged {count} request(s) executing too slow in {minutes} "
                    "minute(s) {between}; most: {detail}",
    "terminated": "{host}: php-fpm pool {subject} terminated {count} request(s) (request_terminate_timeout) in "
                  "{minutes} minute(s) {between}; most: {detail}",
    "slowlog": "{host}: php-fpm pool {subject} traced {count} slow request(s) into its slow log in {minutes} "
               "minute(s) {between}; most: {detail}",
}


def error_events(figures: list[HostFigures]) -> dict[str, Any]:
    """The hosts' error-log events: every row (host x minute x kind x subject x detail), their
    totals per host x kind x subject, per subject fleet-wide, per minute x kind fleet-wide, and
    what was read on each host."""
    rows = [{"host": f.name, "epoch": minute, "minute": minute_text(minute), "kind": kind, "subject": subject,
             "detail": detail, "count": n}
            for f in figures if f.ok for minute, kind, subject, detail, n in f.data.get("events", {}).get("rows", [])]
    totals: dict[tuple[str, str, str], dict[str, Any]] = {}
    subjects: dict[str, dict[str, int]] = {}
    minutes: dict[int, dict[str, int]] = {}
    for row in rows:
        total = totals.setdefault((row["host"], row["kind"], row["subject"]), {
            "host": row["host"], "kind": row["kind"], "subject": row["subject"], "count": 0, "minutes": set(),
            "details": {}})
        total["count"] += row["count"]
        total["minutes"].add(row["epoch"])
        log_profile.add_counts(total["details"], row["detail"], row["count"])
        log_profile.add_counts(subjects.setdefault(row["subject"], {}), row["kind"], row["count"])
        log_profile.add_counts(minutes.setdefault(row["epoch"], {}), row["kind"], row["count"])
    for total in totals.values():   # the minutes seen -> how many, and the first and the last
        seen = total.pop("minutes")
        total.update(minutes=len(seen), first=min(seen), last=max(seen))
    order = list(KINDS)
    return {"kinds": dict(KINDS),
            "rows": rows,
            "totals": sorted(totals.values(), key=lambda t: (t["host"], order.index(t["kind"]), t["subject"])),
            "subjects": {name: subjects[name] for name in sorted(subjects)},
            "minutes": [{"epoch": m, "minute": minute_text(m), "counts": minutes[m]} for m in sorted(minutes)],
            "read": [_events_read(f) for f in figures if f.ok]}


def _events_read(fig: HostFigures) -> dict[str, Any]:
    ev = fig.data.get("events", {})
    return {"host": fig.name, "lines": ev.get("lines", 0), "in_window": ev.get("in_window", 0),
            "unreadable": ev.get("unreadable", 0), "files": [f["path"] for f in ev.get("files", []) if f["read"]],
            "errors": ev.get("errors", [])}


def event_findings(found: dict[str, Any], opts: ReportOptions) -> list[str]:
    """One finding per host x kind x subject, in numbers; the detail the most frequent one (a
    pool's pm.max_children setting, the script most often slow)."""
    out = []
    for total in found["totals"]:
        detail = max(total["details"].items(), key=lambda item: (item[1], item[0]))
        out.append(EVENT_FINDINGS[total["kind"]].format(
            host=total["host"], subject=total["subject"], count=total["count"], minutes=total["minutes"],
            between=between(total["first"], total["last"], opts), detail=detail[0] if total["kind"] == "max_children" else f"{detail[0]} ({detail[1]})"))
    return out


def record_findings(record: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per host: the minute of the deepest accept queue when it came near its limit, and the
    overflows when there were any (a queue of 4 of 511 at 500 hosts is noise, not a finding)."""
    out = []
    for host, minutes in record.items():
        queued = [m for m in minutes if m["queue_max"] and m["queue_max"] >= QUEUE_FINDING_FILL * (m["queue_limit"] or 0)]
        if queued:
            top = max(queued, key=lambda m: (m["queue_max"] / max(m["queue_limit"] or 1, 1), m["queue_max"]))
            out.append(f"{host}: accept queue peaked at {top['queue_max']} of {top['queue_limit']} "
                       f"({top['queue_at']}) in the minute from {clock(top['epoch'])}")
        overflowing = [m for m in minutes if m["overflows_ps_max"]]
        if overflowing:
            top = max(overflowing, key=lambda m: m["overflows_ps_max"])
            out.append(f"{host}: the accept queue overflowed in {len(overflowing)} minute(s), at most "
                       f"{round(top['overflows_ps_max'], 1):g}/s in the minute from {clock(top['epoch'])}")
    return out


def build(figures: list[HostFigures], opts: ReportOptions, inventory: str = "",
          record: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """The whole report: every grouping's figures and timelines, the findings, what was read;
    RECORD (event_record.read_record): the watch timeline beside them."""
    result: dict[str, Any] = {"inventory": inventory, "since": opts.since, "until": opts.until,
                              "classes": list(CLASSES)}
    answered = _int_keyed(figures)
    for name, grouping in GROUPINGS.items():
        result[name] = rollup(answered, grouping)
    fleet = result["fleet"].get("fleet")
    # With one host answering, the fleet's findings would repeat that host's.
    findings = findings_for("fleet", fleet, opts) if fleet and len(result["hosts"]) > 1 else []
    for host in result["hosts"]:
        findings += findings_for(host, result["hosts"][host], opts)
    result["events"] = error_events(figures)
    findings += event_findings(result["events"], opts)
    if record is not None:
        for minutes in record.values():
            for row in minutes:
                row["minute"] = minute_text(row["epoch"])
        result["record"] = record
        findings += record_findings(record)
    result["findings"] = findings
    result["read"] = [_read(f) for f in figures]
    return result


def _read(fig: HostFigures) -> dict[str, Any]:
    if not fig.ok:
        return {"host": fig.name, "ok": False, "error": fig.error}
    d = fig.data
    return {"host": fig.name, "ok": True, "lines": d["lines"], "in_window": d["in_window"],
            "unreadable": d["unreadable"], "files": [f["path"] for f in d["files"] if f["read"]],
            "errors": d["errors"], "elapsed_s": d["elapsed_s"], "throttled_s": d["throttled_s"]}


def render(result: dict[str, Any], fmt: str) -> str:
    """RESULT as FMT: markdown, html or json."""
    import json

    if fmt == "json":
        return json.dumps(result, indent=2)
    if fmt == "html":
        from opsctl.event_report_html import page

        return page(result)
    from opsctl.event_report_view import markdown

    return markdown(result)


def run_report(inventory: str, limit: str | None, vault: Any, opts: ReportOptions, fmt: str) -> int:
    """Measure, print in FMT; 0 when every host answered, 1 when one did not."""
    import click
    from rich.console import Console

    from opsctl.errors import EXIT_FAILED, EXIT_OK
    from opsctl.event_record import read_record
    from opsctl.inventory import load_inventory

    record = read_record(opts.record, opts.since, opts.until) if opts.record else None
    inv = load_inventory(inventory, limit, vault)
    with Console(stderr=True).status(f"reading the access logs of {len(inv.hosts)} host(s)") as status:
        figures = measure(inv, opts, on_host=lambda f: status.update(f"{f.name}: {'done' if f.ok else f.error}"))
    result = build(figures, opts, inventory, record)
    click.echo(render(result, fmt), nl=fmt == "json")
    return EXIT_OK if all(f.ok for f in figures) else EXIT_FAILED
