"""`opsctl profile suggest`: the event profile measured from what the hosts served.

Each host reads its own access logs (opsctl.host_logs: access_log.py and log_profile.py of the
collection, at low priority and a bounded rate) and answers with aggregates only. Here the
hosts' answers become the proposed profile, with the evidence for every figure.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from ansible_collections.opsctl.fleet.plugins.plugin_utils import log_profile, upstream_timeouts
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip, parse_positive_duration

from opsctl import host_logs
from opsctl.errors import OpsctlError
from opsctl.host_logs import DEFAULT_RATE_MB, HostFigures
from opsctl.inventory import Inventory

P_WORKER = 0.95             # a worker's memory: the 95th percentile of the running ones, not the mean


@dataclass(frozen=True)
class SuggestOptions:
    since_s: float
    expect: float = 1.0
    rate_mb: float = DEFAULT_RATE_MB
    timeout_s: float = 600.0


def parse_expect(text: str) -> float:
    """`10x`, `10` or `2.5x`: how many times the busiest second seen the event brings."""
    value = text.strip().lower().removesuffix("x")
    try:
        factor = float(value)
    except ValueError:
        raise OpsctlError(f"--expect {clip(text)}: expected a factor like 10x") from None
    if not math.isfinite(factor) or not 0 < factor <= 1000:
        raise OpsctlError(f"--expect {clip(text)}: expected a factor above 0 and at most 1000x")
    return factor


def parse_span(text: str, option: str = "--since") -> float:
    """Seconds of a duration option (--since 7d, --timeout 10m); bad input is one line."""
    try:
        return parse_positive_duration(text).total_seconds()
    except ValueError as exc:
        raise OpsctlError(f"{option} {clip(text)}: {exc}") from None


def host_script(since_epoch: float, rate_mb: float, paths: tuple[str, ...] = ()) -> bytes:
    """access_log.py and log_profile.py with the window. PATHS: these files instead of the
    access logs nginx names (tests)."""
    return host_logs.host_script(("access_log", "log_profile"),
                                 {"since": since_epoch, "rate": rate_mb * 1_000_000, "paths": list(paths)},
                                 needs=("log_facts",))


def measure(inv: Inventory, opts: SuggestOptions, on_host: Callable[[HostFigures], None] | None = None) -> list[HostFigures]:
    return host_logs.run_on_hosts(inv, host_script(time.time() - opts.since_s, opts.rate_mb), opts.timeout_s, on_host)


def _when(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _histogram(data: dict[str, Any], key: str) -> dict[int, int]:
    return {int(k): int(v) for k, v in (data.get(key) or {}).items()}


def host_view(fig: HostFigures) -> dict[str, Any]:
    """One host's figures and their evidence."""
    if not fig.ok:
        return {"host": fig.name, "ok": False, "error": fig.error}
    d = fig.data
    request, upstream = _histogram(d, "request_ms"), _histogram(d, "upstream_ms")
    rss = d.get("fpm_rss_kb") or []
    return {
        "host": fig.name, "ok": True,
        "peak_1s_qps": d["peak_1s"]["requests"], "peak_1s_at": _when(d["peak_1s"]["at"]),
        "peak_1m_qps": round(d["peak_1m"]["requests"] / 60, 2), "peak_1m_requests": d["peak_1m"]["requests"],
        "peak_1m_at": _when(d["peak_1m"]["at"]),
        "request_ms": {"p50": log_profile.percentile(request, 0.5), "p99": log_profile.percentile(request, 0.99),
                       "count": sum(request.values())},
        "upstream_ms": {"p50": log_profile.percentile(upstream, 0.5), "p99": log_profile.percentile(upstream, 0.99),
                        "count": sum(upstream.values())},
        "fpm_workers": len(rss), "fpm_rss_p95_mb": _p95_mb(rss),
        "lines": d["lines"], "in_window": d["in_window"], "unreadable": d["unreadable"],
        "first": _when(d["first"]), "last": _when(d["last"]),
        "files": [f["path"] for f in d["files"] if f["read"]],
        "files_skipped": [f["path"] for f in d["files"] if not f["read"]],
        "errors": d["errors"], "elapsed_s": d["elapsed_s"], "throttled_s": d["throttled_s"],
    }


def _p95_mb(rss_kb: list[int]) -> float | None:
    value = log_profile.percentile({kb: rss_kb.count(kb) for kb in set(rss_kb)}, P_WORKER)
    return None if value is None else round(value / 1024, 1)


def suggest(figures: list[HostFigures], opts: SuggestOptions) -> dict[str, Any]:
    """The proposed profile: the busiest host's busiest second (per host, as the profile counts
    it) times --expect, p50/p99 of every host's requests merged, p95 of every worker's RSS."""
    hosts = [host_view(f) for f in figures]
    ok = [f for f in figures if f.ok]
    request = log_profile.merge(_histogram(f.data, "request_ms") for f in ok)
    upstream = log_profile.merge(_histogram(f.data, "upstream_ms") for f in ok)
    source, times = ("request_time", request) if request else ("upstream_response_time", upstream)
    rss = sorted(kb for f in ok for kb in f.data.get("fpm_rss_kb") or [])
    busiest = max((h for h in hosts if h["ok"]), key=lambda h: h["peak_1s_qps"], default=None)
    seen_peak = busiest["peak_1s_qps"] if busiest else 0
    p50, p99 = log_profile.percentile(times, 0.5), log_profile.percentile(times, 0.99)
    memory = _p95_mb(rss)
    profile: dict[str, Any] = {
        "peak_qps": math.ceil(seen_peak * opts.expect) if seen_peak else None,
        "request_time": {"typical_ms": p50, "p99_ms": p99},
        "client_timeout_s": math.ceil(upstream_timeouts.shortest_client_ms(p99) / 1000) if p99 else None,
        "php_worker_memory_mb": math.ceil(memory) if memory else None,
    }
    evidence = {
        "peak_qps": (f"{seen_peak} requests in the busiest second, on {busiest['host']} at {busiest['peak_1s_at']}"
                     f" x{opts.expect:g} expected" if busiest and seen_peak else "no request in the window"),
        "request_time": (f"{source} of {sum(times.values())} requests on {len(ok)} host(s): p50 {p50} ms, p99 {p99} ms"
                         if times else "the logs hold no request times (the stock combined format): "
                                       "`opsctl harden` makes nginx log them (opsctl_timing)"),
        "client_timeout_s": ("not in the logs: the least the schema accepts for this p99 (connect + p99 + "
                             "queue wait + the 504's way back), rounded up; set your clients' own" if p99 else "not in the logs"),
        "php_worker_memory_mb": (f"p95 of the RSS of {len(rss)} running php-fpm workers: {memory} MB"
                                 if rss else "no php-fpm worker running"),
    }
    return {"since_s": opts.since_s, "expect": opts.expect, "profile": profile, "evidence": evidence,
            "hosts": hosts, "request_ms_all": {"p50": p50, "p99": p99, "source": source,
                                               "upstream_p50": log_profile.percentile(upstream, 0.5),
                                               "upstream_p99": log_profile.percentile(upstream, 0.99)}}


def yaml_block(result: dict[str, Any]) -> str:
    """The group_vars block: opsctl_event with the measured figures, a comment on each."""
    p, ev = result["profile"], result["evidence"]

    def line(indent: str, key: str, value: Any, why: str) -> str:
        shown = "null" if value is None else value
        return f"{indent}{key}: {shown}   # {why}\n"

    return ("# opsctl profile suggest: measured from the access logs and the running php-fpm workers\n"
            "opsctl_event:\n"
            + line("  ", "peak_qps", p["peak_qps"], ev["peak_qps"])
            + "  request_time:\n"
            + line("    ", "typical_ms", p["request_time"]["typical_ms"], "p50: " + ev["request_time"])
            + line("    ", "p99_ms", p["request_time"]["p99_ms"], "p99")
            + line("  ", "client_timeout_s", p["client_timeout_s"], ev["client_timeout_s"])
            + line("  ", "php_worker_memory_mb", p["php_worker_memory_mb"], ev["php_worker_memory_mb"]))


def run_suggest(inventory: str, limit: str | None, vault: Any, opts: SuggestOptions, fmt: str) -> int:
    """Measure, print in FMT; 0 when every host answered, 1 when one did not."""
    import click
    from rich.console import Console

    from opsctl.errors import EXIT_FAILED, EXIT_OK
    from opsctl.inventory import load_inventory
    from opsctl.profile_view import print_suggestion

    inv = load_inventory(inventory, limit, vault)
    with Console(stderr=True).status(f"reading the access logs of {len(inv.hosts)} host(s)") as status:
        figures = measure(inv, opts, on_host=lambda f: status.update(f"{f.name}: {'done' if f.ok else f.error}"))
    result = suggest(figures, opts)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    elif fmt == "yaml":
        click.echo(yaml_block(result), nl=False)
    else:
        print_suggestion(Console(), result)
        click.echo("\n" + yaml_block(result), nl=False)
    return EXIT_OK if all(f.ok for f in figures) else EXIT_FAILED
