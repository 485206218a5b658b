"""What `opsctl report` measures on a host, where the logs are: the access logs (found, read,
throttled and time-filtered as log_profile does for `profile suggest`) counted per minute x
vhost x upstream x status class, with latency histograms per minute x vhost x upstream for
$request_time and for $upstream_response_time (every attempt, under the upstream it went to).
Only these aggregates leave the host; never a log line.

Written to run on the hosts (`python3 -`, sent by opsctl/event_report.py beside access_log.py and
log_profile.py, which are passed in): standard library only, Python 3.7 and later. The
histograms are log_profile's fixed buckets, so the controller merges them across hosts exactly.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

# The status classes of the report, in its columns' order. 499: the client gave up; 504: nginx
# gave up on the upstream; 502 / 503: the upstream failed or nginx shed the request.
CLASSES = ("2xx", "3xx", "499", "502", "503", "504", "other")
NONE = "-"          # a vhost or upstream the line does not tell (combined; a static file)
MINUTE = 60


def status_class(status: Optional[int]) -> str:
    if status in (499, 502, 503, 504):
        return str(status)
    if status is not None and 200 <= status < 400:
        return f"{status // 100}xx"
    return "other"


def vhost(entry: Any) -> str:
    """The vhost that answered: $server_name, or the Host header where the server is the
    catch-all `_` (or not logged)."""
    if entry.server and entry.server != "_":
        return entry.server
    return entry.host or entry.server or NONE


def _last(values: Any) -> str:
    """The upstream a request's answer came from: the last attempt's address."""
    return values[-1] if values else NONE


class Report:
    """Counts and histograms keyed by (minute, vhost, upstream[, class]), within a log_profile.Window."""

    def __init__(self, window: Any, log_profile: Any) -> None:
        self.window, self.lp = window, log_profile
        self.since = window.since
        self.counts: Dict[Tuple[int, str, str, str], int] = {}
        self.request_ms: Dict[Tuple[int, str, str], Dict[int, int]] = {}
        self.upstream_ms: Dict[Tuple[int, str, str], Dict[int, int]] = {}

    def add(self, entry: Any) -> None:
        if not self.window.admit(entry):
            return
        minute = int(entry.time) // MINUTE * MINUTE
        host, addrs = vhost(entry), entry.upstream_addr or ()
        key = (minute, host, _last(addrs))
        self.lp.add_counts(self.counts, key + (status_class(entry.status),))
        if entry.request_time is not None:
            self.lp.add_counts(self.request_ms.setdefault(key, {}), self.lp.bucket(entry.request_time * 1000))
        for i, seconds in enumerate(entry.upstream_response_time or ()):
            if seconds is None:
                continue
            addr = addrs[i] if i < len(addrs) else key[2]
            self.lp.add_counts(self.upstream_ms.setdefault((minute, host, addr), {}), self.lp.bucket(seconds * 1000))

    def summary(self) -> Dict[str, Any]:
        return {**self.window.summary(),
                "counts": [list(k) + [n] for k, n in sorted(self.counts.items())],
                "request_ms": _rows(self.request_ms), "upstream_ms": _rows(self.upstream_ms)}


def _rows(histograms: Dict[Tuple[int, str, str], Dict[int, int]]) -> List[List[Any]]:
    return [list(k) + [{str(b): n for b, n in sorted(h.items())}] for k, h in sorted(histograms.items())]


def main(params: Dict[str, Any], access_log: Any, log_profile: Any) -> None:
    """Print one JSON object: this host's report aggregates over [since, until)."""
    window = log_profile.Window(float(params["since"]), float(params["until"]))
    print(json.dumps(log_profile.collect(params, access_log, Report(window, log_profile))))
