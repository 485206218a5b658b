"""Read nginx's error log and php-fpm's error log and slow log into events: when, what kind, and
about what (an upstream, a pool), with the vhost or the script beside it; never the line itself.

nginx writes a line for every upstream it gave up on, and one for every connection it could not
open for want of worker_connections or file descriptors (F6), and one for every request its
limit_conn or limit_req zones refused (load shed on purpose: the 503s of a hardened fleet): timed out (errno 110), connect() failed
(111: refused; 11 on a unix socket: its listen backlog full, a kind of its own), no live upstreams (every server of the group
marked failed), closed or reset by the upstream, and `upstream server temporarily disabled` when
a peer reached max_fails and nginx stops sending to it for fail_timeout. php-fpm's master writes
`server reached pm.max_children setting (N)` when a pool had no idle worker left (once per such
stretch, checked every second), `executing too slow` for a request over request_slowlog_timeout
(and traces it into the pool's slowlog), `execution timed out` when request_terminate_timeout
killed one.

Their times carry no zone: they are the host's local time, so this reads them on the host
itself (time.mktime, the host's own zone rules, daylight saving included).

Written to run where the logs are (`python3 -`, sent by opsctl/event_report.py beside
log_report.py): standard library only, Python 3.7 and later.
"""

from __future__ import annotations

import re
import time
from typing import Dict, Iterable, Iterator, Optional, Tuple

# The kinds, in the report's order: code -> what it means.
NGINX_KINDS = {
    "upstream_timed_out": "upstream timed out (110)",
    "upstream_backlog_full": "connect() to a unix socket failed (11): its listen backlog was full",
    "upstream_connect_failed": "connect() to the upstream failed",
    "no_live_upstreams": "no live upstreams",
    "upstream_closed": "upstream closed or reset the connection",
    "upstream_disabled": "nginx marked the upstream failed (temporarily disabled)",
    "worker_connections": "nginx ran out of worker_connections",
    "open_files": "nginx ran out of file descriptors (24: Too many open files)",
    "shed": "nginx shed the request (limit_conn / limit_req: a 503 by design)",
}
FPM_KINDS = {
    "max_children": "php-fpm pool reached pm.max_children",
    "slow_warning": "php-fpm request executing too slow",
    "terminated": "php-fpm request terminated (request_terminate_timeout)",
    "slowlog": "php-fpm slow-log entry",
}
KINDS = {**NGINX_KINDS, **FPM_KINDS}
NONE = "-"
_CACHE_MAX = 4096
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}

# 2026/12/06 10:00:01 [error] 812#812: *56 upstream timed out (110: ...) ..., client: ..., server: ...
_NGINX_LINE = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d:\d\d:\d\d) \[(\w+)\] \d+#\d+: (.*)$")
# A message names an upstream ("while connecting to upstream", `upstream: "..."`) or is none of ours.
_NGINX_KIND = (
    # F6, limits for a normal day: the request fails whatever the upstream (a 500, or no answer).
    ("worker_connections", re.compile(r"\d+ worker_connections are not enough")),
    ("open_files", re.compile(r"\(24: Too many open files\)")),
    # Load shed on purpose (the hardened fleet's 503s): limit_conn's and limit_req's own lines.
    ("shed", re.compile(r"^\*\d+ limiting (?:connections|requests)(?:, excess: \S+)? by zone ")),
    ("upstream_disabled", re.compile(r"upstream server temporarily disabled")),
    ("upstream_timed_out", re.compile(r"upstream timed out")),
    ("no_live_upstreams", re.compile(r"no live upstreams")),
    # EAGAIN on a unix socket: the listener's accept queue (php-fpm's listen.backlog) was full.
    ("upstream_backlog_full", re.compile(r"connect\(\) to unix:\S+ failed \(11: .*upstream")),
    ("upstream_connect_failed", re.compile(r"connect\(\) (?:to \S+ )?failed .*upstream")),
    ("upstream_closed", re.compile(r"upstream prematurely closed|\(104: Connection reset by peer\).*upstream")),
)
_WORKER_CONNECTIONS = re.compile(r"(\d+ worker_connections)")
_ZONE = re.compile(r' by zone "([^"]*)"')
_SERVER = re.compile(r", server: ([^,]*)")
_HOST = re.compile(r', host: "([^"]*)"')
_UPSTREAM = re.compile(r', upstream: "([^"]*)"')
_PORT = re.compile(r":\d+$")
# [06-Dec-2026 10:00:01] WARNING: [pool www] ...  (log_level debug adds .micro seconds)
_FPM_STAMP = r"\[(\d\d)-([A-Z][a-z]{2})-(\d{4}) (\d\d:\d\d:\d\d)(?:\.\d+)?\]"
_FPM_LINE = re.compile(r"^" + _FPM_STAMP + r" (\w+): (.*)$")
_FPM_KIND = (
    ("max_children", re.compile(r"^\[pool (\S+)\] server reached (?:pm\.)?max_children setting \((\d+)\)")),
    ("slow_warning", re.compile(r"^\[pool (\S+)\] child \d+, script '([^']*)' .*executing too slow")),
    ("terminated", re.compile(r"^\[pool (\S+)\] child \d+, script '([^']*)' .*execution timed out")),
)
# The slow log: a blank line, `[06-Dec-2026 10:00:01]  [pool www] pid 1234`, `script_filename = X`,
# then the stack, one `[0x00007f...] function() file:line` a frame.
_SLOW_HEAD = re.compile(r"^" + _FPM_STAMP + r"\s+\[pool (\S+)\] pid \d+$")
_SLOW_SCRIPT = re.compile(r"^script_filename = (.*)$")
_SLOW_FRAME = re.compile(r"^\[0x[0-9a-f]+\] ")


class Event:
    """One event. SUBJECT: the upstream (as $upstream_addr writes it: `10.0.0.3:80`,
    `unix:/run/php/php8.2-fpm.sock`; an upstream group's name for no live upstreams) or the pool;
    DETAIL: the script, or the pm.max_children setting; SERVER / HOST: nginx's vhost fields."""
    __slots__ = ("time", "kind", "subject", "detail", "server", "host")

    def __init__(self, time_: float, kind: str, subject: str, detail: str = NONE,
                 server: Optional[str] = None, host: Optional[str] = None) -> None:
        self.time, self.kind, self.subject, self.detail = time_, kind, subject, detail
        self.server, self.host = server, host


def upstream_address(text: str) -> str:
    """nginx's `upstream: "http://10.0.0.3:80/x"` or `"fastcgi://unix:/run/php.sock:"` -> the
    address $upstream_addr logs for it: `10.0.0.3:80`, `unix:/run/php.sock`."""
    rest = text.split("://", 1)[-1]
    if rest.startswith("unix:"):
        return "unix:" + rest[5:].split(":", 1)[0]
    return rest.split("/", 1)[0] or NONE


def host_name(header: str) -> str:
    """The Host header as the access log's $host has it: lower case, without the port."""
    name = _PORT.sub("", header.strip())
    return name.lower()


class _Reader:
    """Lines -> Events, counting what it read and what it could not; never raises on a line."""

    def __init__(self, label: str = "") -> None:
        self.label = label      # beside a pool's name when a host runs several php-fpm masters
        self.lines = 0
        self.unreadable = 0
        self._times: Dict[Tuple[int, int, int, str], float] = {}

    def local_epoch(self, year: int, month: int, day: int, hms: str) -> float:
        """Epoch seconds of a local time on this host; lines of one second share one."""
        key = (year, month, day, hms)
        cached = self._times.get(key)
        if cached is None:
            if len(self._times) >= _CACHE_MAX:
                self._times.clear()
            hour, minute, second = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
            if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
                raise ValueError(hms)
            cached = self._times[key] = time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
        return cached

    def pool(self, name: str) -> str:
        return f"{name} ({self.label})" if self.label else name

    def entries(self, lines: Iterable[str]) -> Iterator[Event]:
        for line in lines:
            self.lines += 1
            try:
                found = self.parse(line.rstrip("\r\n"))
            except (ValueError, KeyError, OverflowError):
                found = False
            if found is False:
                self.unreadable += 1
            elif found is not None:
                yield found
        last = self.finish()
        if last is not None:
            yield last

    def parse(self, line: str) -> "Optional[Event] | bool":
        """The line's Event; None for a line read that is no event; False for one not read."""
        raise NotImplementedError

    def finish(self) -> Optional[Event]:
        return None


class NginxErrors(_Reader):
    def parse(self, line: str) -> "Optional[Event] | bool":
        match = _NGINX_LINE.match(line)
        if match is None:
            return False if line.strip() else None
        message = match.group(6)
        kind = next((k for k, pattern in _NGINX_KIND if pattern.search(message)), "")
        if not kind:
            return None
        when = self.local_epoch(int(match.group(1)), int(match.group(2)), int(match.group(3)), match.group(4))
        upstream, server, host = _UPSTREAM.search(message), _SERVER.search(message), _HOST.search(message)
        return Event(when, kind, self.subject(kind, message, upstream),
                     server=server.group(1) if server else None, host=host_name(host.group(1)) if host else None)

    @staticmethod
    def subject(kind: str, message: str, upstream: "Optional[re.Match[str]]") -> str:
        """What ran out for the limits' kinds (`768 worker_connections`), else the upstream."""
        if kind == "worker_connections":
            return _WORKER_CONNECTIONS.search(message).group(1)   # type: ignore[union-attr]
        if kind == "open_files":
            return "file descriptors"
        if kind == "shed":
            return "zone " + _ZONE.search(message).group(1)   # type: ignore[union-attr]
        return upstream_address(upstream.group(1)) if upstream else NONE


def _fpm_epoch(reader: _Reader, match: "re.Match[str]") -> float:
    return reader.local_epoch(int(match.group(3)), _MONTHS[match.group(2)], int(match.group(1)), match.group(4))


class FpmErrors(_Reader):
    def parse(self, line: str) -> "Optional[Event] | bool":
        match = _FPM_LINE.match(line)
        if match is None:
            return False if line.strip() else None
        for kind, pattern in _FPM_KIND:
            found = pattern.match(match.group(6))
            if found:
                return Event(_fpm_epoch(self, match), kind, self.pool(found.group(1)), found.group(2))
        return None


class SlowLog(_Reader):
    """One event per traced request, its script from the `script_filename` line that follows."""

    def __init__(self, label: str = "") -> None:
        super().__init__(label)
        self._pending: Optional[Event] = None

    def parse(self, line: str) -> "Optional[Event] | bool":
        head = _SLOW_HEAD.match(line)
        if head:
            before, self._pending = self._pending, Event(_fpm_epoch(self, head), "slowlog", self.pool(head.group(5)))
            return before    # a trace whose script line never came: its script unknown
        script = _SLOW_SCRIPT.match(line)
        if script and self._pending is not None:
            event, self._pending = self._pending, None
            event.detail = script.group(1).strip() or NONE
            return event
        if not line.strip() or _SLOW_FRAME.match(line):
            return None
        return False

    def finish(self) -> Optional[Event]:
        event, self._pending = self._pending, None
        return event
