"""Read nginx access-log lines: opsctl's own format, the stock `combined`, and any log_format.

One line becomes an Entry: when it was written, its status, request and upstream times, the
upstream attempts, the vhost, method and path (never the query string). What a format does not
log is None; a line that fits no format is counted and skipped, never raised.

Written to run where the logs are, not only on the controller: `profile suggest` and `report`
stream this file to the hosts and aggregate there (issue 15), so it imports the standard library
only (and nothing of this collection) and runs on Python 3.7 and later.

The layout of opsctl's format, OPSCTL_TIMING, is defined here once: the opsctl_nginx role writes
it (filter opsctl.fleet.nginx_log_format) and this reader compiles the same text.
docs/architecture.md, "Access logs", says why it is the stock `main` format (itself `combined`
plus X-Forwarded-For) with the timing fields appended, query strings cut, and the upstream
response time last.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, List, Optional, Tuple

OPSCTL_TIMING_NAME = "opsctl_timing"
# $opsctl_request and $opsctl_referer are $request and $http_referer with the query string cut,
# made by two maps the role writes beside this format (opsctl-log-format.conf.j2).
OPSCTL_TIMING = (
    '$remote_addr - $remote_user [$time_local] "$opsctl_request" $status $body_bytes_sent ',
    '"$opsctl_referer" "$http_user_agent" "$http_x_forwarded_for" ',
    '$msec $request_time "$host" "$server_name" ',
    '"$upstream_addr" "$upstream_status" "$upstream_connect_time" "$upstream_header_time" ',
    '$upstream_response_time',
)
# nginx's built-in format, used by every access_log that names none, and `main` as RHEL's and
# nginx.org's packages define it.
COMBINED = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent '
            '"$http_referer" "$http_user_agent"')
MAIN = COMBINED + ' "$http_x_forwarded_for"'

Times = Tuple[Optional[float], ...]


@dataclass
class Entry:
    """One request. None: the format does not log it. An upstream tuple holds one value per
    attempt (a retry to the next server, or after an internal redirect), None where nginx wrote
    `-`; () when no upstream was tried (a static file, a 503 nginx shed itself). Text is as
    nginx wrote it, its escapes kept (`\x22` for a quote in a path)."""
    __slots__ = ("time", "status", "request_time", "upstream_connect_time", "upstream_header_time",
                 "upstream_response_time", "upstream_addr", "upstream_status", "host", "server", "method",
                 "path", "body_bytes")
    time: Optional[float]           # epoch seconds when the line was written ($msec: to the ms)
    status: Optional[int]
    request_time: Optional[float]   # seconds, first byte read to last byte sent
    upstream_connect_time: Optional[Times]
    upstream_header_time: Optional[Times]
    upstream_response_time: Optional[Times]
    upstream_addr: Optional[Tuple[str, ...]]
    upstream_status: Optional[Tuple[Optional[int], ...]]
    host: Optional[str]             # $host: the Host header, lower case, without port
    server: Optional[str]           # $server_name: the vhost that answered
    method: Optional[str]
    path: Optional[str]             # as the client sent it (percent-encoded), without the query
    body_bytes: Optional[int]


_FIELDS = Entry.__slots__
_UPSTREAM_LISTS = ("upstream_connect_time", "upstream_header_time", "upstream_response_time",
                   "upstream_addr", "upstream_status")
_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct",
                                       "Nov", "Dec"), 1)}
_CACHE_MAX = 4096   # distinct timestamps remembered per reader: lines of one second share one


# --- values -------------------------------------------------------------------------------------

def _int(text: str) -> Optional[int]:
    return None if text == "-" or text == "" else int(text)


def _float(text: str) -> Optional[float]:
    return None if text == "-" or text == "" else float(text)


def _text(text: str) -> Optional[str]:
    return None if text == "-" or text == "" else text


def _items(text: str) -> List[str]:
    """The attempts of an upstream list: `a, b : c` (a retry, then an internal redirect) -> [a, b, c]."""
    return text.replace(" : ", ", ").split(", ")


def _times(text: str) -> Times:
    if " " not in text:   # one attempt or none: most lines
        return () if text == "-" else (float(text),)
    return tuple(None if item == "-" else float(item) for item in _items(text))


def _statuses(text: str) -> Tuple[Optional[int], ...]:
    if " " not in text:
        return () if text == "-" else (int(text),)
    return tuple(None if item == "-" else int(item) for item in _items(text))


def _addrs(text: str) -> Tuple[str, ...]:
    if " " not in text:
        return () if text == "-" else (text,)
    return tuple(_items(text))


def _request(text: str) -> Tuple[Optional[str], Optional[str]]:
    """(method, path) of a request line; (None, None) for what is no request (a TLS hello or
    junk sent to a plain port, which nginx logs with 400)."""
    parts = text.split(" ", 2)
    if len(parts) < 2 or not parts[0].isalpha() or not parts[0].isupper():
        return None, None
    return parts[0], parts[1].partition("?")[0]


def _path(text: str) -> Optional[str]:
    return None if text == "-" or text == "" else text.partition("?")[0]


def _epoch(year: int, month: int, day: int, hms: str, zone: str) -> float:
    """Seconds since the epoch of a date, `HH:MM:SS` and a `+0800` / `+08:00` offset."""
    hour, minute, second = int(hms[0:2]), int(hms[3:5]), int(hms[6:8])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 61):
        raise ValueError(f"no time nginx writes: {year}-{month}-{day} {hms}")
    offset = (int(zone[1:3]) * 3600 + int(zone[-2:]) * 60) * (-1 if zone[0] == "-" else 1)
    return float(calendar.timegm((year, month, day, hour, minute, second)) - offset)


def _clf_time(text: str) -> float:
    """`06/Dec/2026:06:14:39 +0000` ($time_local)."""
    return _epoch(int(text[7:11]), _MONTHS[text[3:6]], int(text[0:2]), text[12:20], text[21:26])


def _iso_time(text: str) -> float:
    """`2026-12-06T06:14:39+00:00` ($time_iso8601)."""
    return _epoch(int(text[0:4]), int(text[5:7]), int(text[8:10]), text[11:19], text[19:25])


# --- formats ------------------------------------------------------------------------------------

_SLOT = {name: i for i, name in enumerate(_FIELDS)}
_LIST_SLOTS = tuple(_SLOT[name] for name in _UPSTREAM_LISTS)
_METHOD, _PATH = _SLOT["method"], _SLOT["path"]
_REQUEST = -1   # the slot of $request, which fills two: method and path
# What each variable a format may hold gives the Entry: its field and how its text is read.
_VARS: dict = {
    "status": ("status", _int), "body_bytes_sent": ("body_bytes", _int), "request_time": ("request_time", _float),
    "host": ("host", _text), "server_name": ("server", _text), "request_method": ("method", _text),
    "request_uri": ("path", _path), "uri": ("path", _path), "document_uri": ("path", _path),
    "upstream_connect_time": ("upstream_connect_time", _times), "upstream_header_time": ("upstream_header_time", _times),
    "upstream_response_time": ("upstream_response_time", _times), "upstream_addr": ("upstream_addr", _addrs),
    "upstream_status": ("upstream_status", _statuses),
}
_REQUEST_VARS = ("request", "opsctl_request")
# The timestamp variables, best first: a format with several is read by the most precise.
_TIME_VARS = {"msec": float, "time_iso8601": _iso_time, "time_local": _clf_time}

_QUOTED = r'[^"\\]*(?:\\.[^"\\]*)*'    # up to the closing quote (escape=json writes \")
_LIST = r'[^\s,]+(?:(?:, | : )[^\s,]+)*'        # one attempt, or `a, b : c`
_PATTERNS = {"time_local": r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}",
             "time_iso8601": r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", "msec": r"\d+\.\d+",
             "status": r"\d{3}", "request_time": r"\d+\.\d+|-", "body_bytes_sent": r"\d+|-"}
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _split_format(definition: str) -> List[Tuple[str, str]]:
    """A log_format's text -> [(literal, ""), ("", variable), ...] in order."""
    out: List[Tuple[str, str]] = []
    at = 0
    for match in _VARIABLE.finditer(definition):
        if match.start() > at:
            out.append((definition[at:match.start()], ""))
        out.append(("", match.group(1) or match.group(2)))
        at = match.end()
    if at < len(definition):
        out.append((definition[at:], ""))
    return out


def _variable_pattern(name: str, quoted: bool, closes: bool) -> str:
    """The regex of one variable's value: inside quotes up to the closing quote, a list with its
    `, ` and ` : ` separators, a timestamp with its space, else one blank-free word."""
    if quoted and closes:
        return _QUOTED
    if name in _PATTERNS:
        return _PATTERNS[name]
    if name in _VARS and _VARS[name][0] in _UPSTREAM_LISTS:
        return _LIST
    return r'[^"\s]*' if quoted else r"\S*"


def _align(values: List[object]) -> None:
    """nginx writes one `-` for every list of a request that tried no upstream, and also for a
    list with no value in the one attempt made (the header time of a 504): a lone `-` beside a
    list that shows attempts is one None per attempt."""
    attempts = max(len(values[i] or ()) for i in _LIST_SLOTS)   # type: ignore[arg-type]
    for i in _LIST_SLOTS:
        if values[i] == ():
            values[i] = (None,) * attempts


class LogFormat:
    """One log_format, compiled to a regex: `parse(line)` -> Entry, or None when the line does
    not fit. Only the variables an Entry uses are captured; the others are matched and skipped."""

    def __init__(self, definition: str, name: str = "") -> None:
        self.name = name
        self.definition = definition
        parts = _split_format(definition)
        names = [var for _lit, var in parts if var]
        time_var = next((v for v in _TIME_VARS if v in names), "")
        self._read_time = _TIME_VARS.get(time_var, float)
        self._times: dict = {}
        regex, plan, quoted = ["^"], [], False
        for i, (literal, var) in enumerate(parts):
            if literal:
                regex.append(re.escape(literal))
                quoted = (quoted + literal.count('"')) % 2 == 1
                continue
            following = parts[i + 1][0] if i + 1 < len(parts) else ""
            pattern = _variable_pattern(var, quoted, following.startswith('"'))
            step = self._step(var, time_var, plan)
            regex.append(f"({pattern})" if step else f"(?:{pattern})")
            if step:
                plan.append(step)
        self._regex = re.compile("".join(regex) + self._end())
        self._plan = plan
        self._lists = any(slot in _LIST_SLOTS for slot, _read in plan)

    def _end(self) -> str:
        return "$"

    def _step(self, var: str, time_var: str, plan: list) -> Optional[Tuple[int, Callable[[str], object]]]:
        """(slot, reader) of a variable the Entry uses, else None (matched, not captured)."""
        if var == time_var and all(slot != _SLOT["time"] for slot, _read in plan):
            return _SLOT["time"], (float if var == "msec" else self._time)
        if var in _REQUEST_VARS:
            return _REQUEST, _request
        if var in _VARS:
            return _SLOT[_VARS[var][0]], _VARS[var][1]
        return None

    def _time(self, text: str) -> float:
        """Lines of one second share their timestamp: each text is read once."""
        cached = self._times.get(text)
        if cached is None:
            if len(self._times) >= _CACHE_MAX:
                self._times.clear()
            cached = self._times[text] = float(self._read_time(text))
        return cached

    def parse(self, line: str) -> Optional[Entry]:
        match = self._regex.match(line)
        if match is None:
            return None
        values: List[object] = [None] * len(_FIELDS)
        for (slot, read), text in zip(self._plan, match.groups()):
            if slot == _REQUEST:
                values[_METHOD], values[_PATH] = read(text)
            else:
                values[slot] = read(text)
        self._more(match, values)
        if self._lists and () in values:   # a proxied line fills every list: no alignment to do
            _align(values)
        return Entry(*values)

    def _more(self, match: "re.Match[str]", values: List[object]) -> None:
        """What a subclass reads beyond the compiled fields."""


# Tail fields of combined-based formats written as key=value (nginx's own documented
# `upstream_time` example: rt= uct= uht= urt=), read when no definition is known.
_TAIL_KEYS = {"rt": "request_time", "uct": "upstream_connect_time", "uht": "upstream_header_time",
              "urt": "upstream_response_time", "ua": "upstream_addr", "us": "upstream_status"}
_TAIL_KEYS.update({var: var for var in _TAIL_KEYS.values()})
_TAIL_PAIR = re.compile(r'(?:^|\s)(\w+)=("[^"]*"|\S+)')


class CombinedPrefix(LogFormat):
    """`combined` and every format that starts with it (RHEL's and nginx.org's `main`, most
    hand-made ones): the combined fields, and from what follows the key=value fields it names."""

    def __init__(self) -> None:
        super().__init__(COMBINED, "combined")
        self._lists = True

    def _end(self) -> str:
        return "(.*)$"

    def _more(self, match: "re.Match[str]", values: List[object]) -> None:
        tail = match.group(match.lastindex or 0)
        if "=" not in tail:
            return
        for key, text in _TAIL_PAIR.findall(tail):
            if key in _TAIL_KEYS:
                field, read = _VARS[_TAIL_KEYS[key]]
                values[_SLOT[field]] = read(text.strip('"'))


# --- reading ------------------------------------------------------------------------------------

def opsctl_timing() -> LogFormat:
    return LogFormat("".join(OPSCTL_TIMING), OPSCTL_TIMING_NAME)


class Reader:
    """Lines -> Entries by the first format that fits (the one that fitted last is tried first:
    a file holds one format, or two around the day it was switched; the combined prefix, which
    fits every line that starts like combined, always last). Counts what it read and what fitted
    no format; never raises on a line.

    Without formats: opsctl_timing, then combined and what starts with it. With the log_format
    definitions nginx -T shows for a file: those first."""

    def __init__(self, formats: Iterable[LogFormat] = ()) -> None:
        self.formats = list(formats) + [opsctl_timing()]
        self.fallback = CombinedPrefix()
        self.lines = 0
        self.unreadable = 0

    def parse(self, line: str) -> Optional[Entry]:
        """The line's Entry, or None (counted) when no format reads it. A line cut short (the
        last one of a file being written) reads as far as a format goes: what combined holds."""
        self.lines += 1
        line = line.rstrip("\r\n")
        for i, fmt in enumerate(self.formats):
            entry = _parse(fmt, line)
            if entry is not None:
                if i:
                    self.formats.insert(0, self.formats.pop(i))
                return entry
        entry = _parse(self.fallback, line)
        if entry is None:
            self.unreadable += 1
        return entry

    def entries(self, lines: Iterable[str]) -> Iterator[Entry]:
        for line in lines:
            entry = self.parse(line)
            if entry is not None:
                yield entry


def _parse(fmt: LogFormat, line: str) -> Optional[Entry]:
    try:
        return fmt.parse(line)
    except (ValueError, KeyError, IndexError, OverflowError):
        return None   # fits the layout, not the values (a month "Foo", a time 99:99)
