"""What `opsctl report` measures on a host, where the logs are: the access logs (found, read,
throttled and time-filtered as log_profile does for `profile suggest`) counted per minute x
vhost x upstream x status class, with latency histograms per minute x vhost x upstream for
$request_time and for $upstream_response_time (every attempt, under the upstream it went to);
and the events of nginx's error logs and php-fpm's error and slow logs (error_log.py) counted
per minute x kind x subject x detail, read the same way under the same rate. Only these
aggregates leave the host; never a log line.

Written to run on the hosts (`python3 -`, sent by opsctl/event_report.py beside access_log.py,
log_profile.py and error_log.py, which are passed in, and fpm_facts.py, log_facts.py, which are
imported): standard library only, Python 3.7 and later. The histograms are log_profile's fixed
buckets, so the controller merges them across hosts exactly.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.opsctl.fleet.plugins.plugin_utils import fpm_facts, log_facts

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


class Events:
    """Error-log events counted per (minute, kind, subject, detail) within a log_profile.Window;
    nginx's detail is the vhost, by the access log's rule (vhost())."""

    def __init__(self, window: Any, log_profile: Any, error_log: Any) -> None:
        self.window, self.since, self.lp = window, window.since, log_profile
        self.nginx_kinds = error_log.NGINX_KINDS
        self.counts: Dict[Tuple[int, str, str, str], int] = {}

    def add(self, event: Any) -> None:
        if not self.window.admit(event):
            return
        detail = vhost(event) if event.kind in self.nginx_kinds else event.detail
        key = (int(event.time) // MINUTE * MINUTE, event.kind, event.subject, detail)
        self.lp.add_counts(self.counts, key)

    def summary(self) -> Dict[str, Any]:
        return {**self.window.summary(), "rows": [list(k) + [n] for k, n in sorted(self.counts.items())]}


def fpm_masters(probe: str) -> List[Dict[str, Any]]:
    """Every php-fpm master of this host (running or stopped: a stopped one's logs still tell
    the event) as fpm_facts reads it from the readiness probe's own discovery and -tt (PROBE:
    opsctl's probe script limited to those sections), so every layout the probe knows is known."""
    try:
        out = subprocess.run(["sh", "-s"], input=probe.encode(), stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, timeout=120, check=False).stdout
        sections = json.loads(out.decode("utf-8", "replace"))["sections"]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return []
    return fpm_facts.parse_php_fpm(sections.get("php_fpm_tt", {}).get("out", ""), None)["masters"]


def event_sources(params: Dict[str, Any], configs: List[Any], log_profile: Any, error_log: Any) -> List[Tuple[Any, List[str]]]:
    """(reader, files) of every log with events: nginx's error logs, then each php-fpm master's
    error log and its pools' slow logs (a pool named with its master's version when the host
    runs several). PARAMS["error_paths"]: these files (and their rotated siblings) instead
    (tests), by reader name."""
    given = params.get("error_paths")
    if given:
        readers = {"nginx": error_log.NginxErrors, "fpm": error_log.FpmErrors, "slow": error_log.SlowLog}
        return [(readers[name](), log_profile.with_rotated(paths)) for name, paths in given.items()]
    sources = [(error_log.NginxErrors(), log_profile.error_logs(configs))]
    masters = fpm_masters(params["fpm_probe"]) if params.get("fpm_probe") else []
    for master in masters:
        label = f"php-fpm {master['version'] or master['conf']}" if len(masters) > 1 else ""
        logs = log_facts.fpm_logs(master)
        sources += [(error_log.FpmErrors(label), log_profile.with_rotated(logs["error"])),
                    (error_log.SlowLog(label), log_profile.with_rotated(logs["slow"]))]
    return sources


def read_events(params: Dict[str, Any], configs: List[Any], throttle: Any, log_profile: Any,
                error_log: Any) -> Dict[str, Any]:
    """The `events` of the host's answer: the rows, and what was read (each file once)."""
    counts = Events(log_profile.Window(float(params["since"]), float(params["until"])), log_profile, error_log)
    files: List[Dict[str, Any]] = []
    errors: List[str] = []
    lines = unreadable = 0
    seen: set = set()
    for reader, paths in event_sources(params, configs, log_profile, error_log):
        paths = [p for p in paths if p not in seen]
        seen.update(paths)
        done = log_profile.scan(paths, counts, reader, throttle)
        files += [dict(f, reader=type(reader).__name__) for f in done["files"]]
        errors += done["errors"]
        lines, unreadable = lines + reader.lines, unreadable + reader.unreadable
    return {"events": {**counts.summary(), "files": files, "errors": errors, "lines": lines,
                       "unreadable": unreadable}}


def main(params: Dict[str, Any], access_log: Any, log_profile: Any, error_log: Any) -> None:
    """Print one JSON object: this host's report aggregates over [since, until)."""
    window = log_profile.Window(float(params["since"]), float(params["until"]))

    def more(configs: List[Any], throttle: Any) -> Dict[str, Any]:
        return read_events(params, configs, throttle, log_profile, error_log)

    print(json.dumps(log_profile.collect(params, access_log, Report(window, log_profile), more)))
