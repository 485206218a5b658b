"""`opsctl profile suggest` for people: the proposed figures with their evidence, then each host's."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from opsctl.safetext import plain


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value} ms"


def print_suggestion(console: Console, result: dict[str, Any]) -> None:
    profile, evidence = result["profile"], result["evidence"]
    table = Table(title="proposed event profile (per host)", title_justify="left")
    for column in ("figure", "value", "evidence"):
        table.add_column(column)
    rt = profile["request_time"]
    rows = [("peak_qps", profile["peak_qps"], evidence["peak_qps"]),
            ("typical_ms (p50)", rt["typical_ms"], evidence["request_time"]),
            ("p99_ms", rt["p99_ms"], ""),
            ("client_timeout_s", profile["client_timeout_s"], evidence["client_timeout_s"]),
            ("php_worker_memory_mb", profile["php_worker_memory_mb"], evidence["php_worker_memory_mb"])]
    for name, value, why in rows:
        table.add_row(name, "-" if value is None else str(value), plain(why))
    console.print(table)
    hosts = Table(title="per host: the evidence", title_justify="left")
    for column in ("host", "figure", "value"):
        hosts.add_column(column)
    for h in result["hosts"]:
        for i, (name, value) in enumerate(_host_rows(h)):
            hosts.add_row(plain(h["host"]) if i == 0 else "", name, plain(value), end_section=False)
        hosts.add_section()
    console.print(hosts)


def _host_rows(h: dict[str, Any]) -> list[tuple[str, str]]:
    if not h["ok"]:
        return [("error", f"[red]{plain(h['error'])}[/red]")]
    skipped = f" (+{len(h['files_skipped'])} older, not read)" if h["files_skipped"] else ""
    return [
        ("busiest second", f"{h['peak_1s_qps']} requests at {h['peak_1s_at'] or '-'}"),
        ("busiest minute", f"{h['peak_1m_requests']} requests ({h['peak_1m_qps']:g}/s) at {h['peak_1m_at'] or '-'}"),
        ("request time p50 / p99", f"{_ms(h['request_ms']['p50'])} / {_ms(h['request_ms']['p99'])} "
                                   f"of {h['request_ms']['count']}"),
        ("upstream time p50 / p99", f"{_ms(h['upstream_ms']['p50'])} / {_ms(h['upstream_ms']['p99'])} "
                                    f"of {h['upstream_ms']['count']}"),
        ("php-fpm worker RSS p95", "-" if h["fpm_rss_p95_mb"] is None else f"{h['fpm_rss_p95_mb']:g} MB of "
                                   f"{h['fpm_workers']} workers"),
        ("lines", f"{h['lines']} read, {h['in_window']} in the window, {h['unreadable']} unreadable"),
        ("window covered", f"{h['first'] or '-'} .. {h['last'] or '-'}"),
        ("files", ", ".join(h["files"]) + skipped or "none"),
        ("took", f"{h['elapsed_s']:g}s" + (f", {h['throttled_s']:g}s of it held back by --rate" if h["throttled_s"] else "")),
    ] + [("error", e) for e in h["errors"]]
