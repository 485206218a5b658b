"""Parse the short durations people write in inventories (90s, 30m, 2h, 1h30m, or seconds) and
the times hosts' configurations hold (nginx: 60, 500ms, 1m30s; php-fpm: 30s, 1m; systemd: 5min,
1h 30min), all by one table of units and within one bound.

The CLI, the check engine, the probe's facts, log slots and the nginx role's filters all read
a duration by the one rule here. Nothing else holds a unit table.

Timeouts opsctl derives are whole milliseconds (millis): nginx and HAProxy take `800ms`, so a
value is written in seconds while it is whole and in milliseconds where it is not (time_text);
php-fpm counts whole seconds only, so its timeouts are the next second up (ceil_seconds).
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Callable

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
# No duration a person writes is longer than this. Longer text is refused before any regex or
# int() sees it: the parts regex backtracks quadratically on a long run of digits (200000 digits
# took minutes), and int() of more than 4300 digits raises.
MAX_CHARS = 40
ECHO_CHARS = 60
# The one table of time units. People write ms s m h d (_PART); nginx also knows w, M (30 d)
# and y (365 d), as it counts them; systemd also knows us and spells every unit out (below).
UNIT_SECONDS = {"us": 0.000001, "ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800,
                "M": 2592000, "y": 31536000}
# No event, margin or timeout opsctl reads is longer than this; a larger figure is a typo, and
# a bound keeps every datetime sum (start + duration) far from Python's limits.
MAX_SECONDS = 3650 * 86400
# nginx's own syntax: whole numbers only, no unit is seconds, and longer units than ours.
_NGINX_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|M|y)?")
# php-fpm: one whole figure and at most one unit (fpm_conf.c's own parser).
_FPM_TIME = re.compile(r"([0-9]+)([smhd]?)")
# systemd.time(7): figures and units, spaces allowed between and inside ("2 h", "1min 30s").
# Its month and year are 30.44 and 365.25 days; no timer delay opsctl reads comes near one.
_SYSTEMD_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)")
_SYSTEMD_NAMES = (("us", "usec us"), ("ms", "msec ms"), ("s", "seconds second sec s"),
                  ("m", "minutes minute min m"), ("h", "hours hour hr h"), ("d", "days day d"),
                  ("w", "weeks week w"), ("M", "months month M"), ("y", "years year y"))
_SYSTEMD_UNIT = {name: unit for unit, names in _SYSTEMD_NAMES for name in names.split()}


class OutOfRange(ValueError):
    """A duration or time beyond MAX_SECONDS: well-formed, and longer than anything opsctl reads."""


def cut(text: str, limit: int = ECHO_CHARS) -> str:
    """Text as a message may hold it: a 5000-digit figure is cut to `limit`, not echoed whole."""
    return text if len(text) <= limit else text[:limit] + "…"


def clip(value: object, limit: int = ECHO_CHARS) -> str:
    """`value` as an error message shows it: its repr, cut to `limit` characters with an ellipsis."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** limit:
        return f"an integer of more than {limit} digits"   # repr() of over 4300 digits raises
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit + 1]                          # never repr() megabytes to show 60 characters
    return cut(repr(value), limit)


def parse_duration(value: object) -> timedelta:
    """Return a timedelta, or raise ValueError with a message fit for a person."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 90s, 30m or 2h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(min(value, MAX_SECONDS + 1))   # 10**400 has no float; it is too long anyway
    elif isinstance(value, str) and len(value) > MAX_CHARS:
        raise ValueError(f"expected a duration like 90s, 30m or 2h (at most {MAX_CHARS} characters), "
                         f"got {clip(value)}")
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"expected a duration like 90s, 30m or 2h, got {clip(value)}")
        seconds = sum(float(n) * UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration like 90s, 30m or 2h, got {clip(value)}")
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"a duration must be at most 3650d, got {clip(value)}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {clip(value)}")
    return timedelta(seconds=seconds)


def parse_positive_duration(value: object) -> timedelta:
    """parse_duration, and longer than zero (an event's length, a window's)."""
    duration = parse_duration(value)
    if duration <= timedelta(0):
        raise ValueError("must be longer than zero")
    return duration


def _bounded(total: float, what: str, text: str, bounded: bool) -> float:
    """`total` seconds, or OutOfRange past MAX_SECONDS (a host's own value may be kept as is)."""
    if not math.isfinite(total) or (bounded and total > MAX_SECONDS):
        raise OutOfRange(f"{what} must be at most 3650d, got {clip(text)}")
    return total


def _sum_parts(parts: re.Pattern[str], text: str, unit: Callable[[str], str | None]) -> float | None:
    """The seconds of `text` written as figure-unit parts back to back (`parts` matches one:
    group 1 the figure, group 2 the unit as written, mapped by `unit`), or None when it is not."""
    total, pos = 0.0, 0
    for match in parts.finditer(text):
        name = unit(match.group(2))
        if match.start() != pos or name is None:
            break
        total += float(match.group(1)) * (UNIT_SECONDS[name] * 1000)
        pos = match.end()
    # Summed in milliseconds: 700ms is then 0.7 s, where 700 x 0.001 s is 0.7000000000000001.
    return total / 1000 if text and pos == len(text) else None


def nginx_seconds(value: object, bounded: bool = True) -> float:
    """An nginx time (60, 60s, 500ms, 1m30s) in seconds, or ValueError with a one-line message.

    float(), not int(): a figure of thousands of digits is simply too large (int() refuses it
    with Python's own error); the bound is the one every duration here has. bounded=False keeps
    what a host's configuration says, however long (the probe: a 5000d timeout is a finding)."""
    text = str(value).strip()
    total = _sum_parts(_NGINX_PART, text, lambda written: written or "s")
    if total is None:
        raise ValueError(f"{clip(text)} is not an nginx time such as 60s, 1m30s or 500ms")
    return _bounded(total, "an nginx time", text, bounded)


def fpm_seconds(value: object) -> int:
    """A php-fpm time (30, 30s, 1m, 2h, 1d) in seconds, or ValueError with a one-line message."""
    text = str(value).strip()
    match = _FPM_TIME.fullmatch(text) if len(text) <= MAX_CHARS else None
    if not match:
        raise ValueError(f"{clip(text)} is not a php-fpm time such as 30s, 1m or 2h")
    return int(match.group(1)) * int(UNIT_SECONDS[match.group(2) or "s"])


def systemd_seconds(value: object, bounded: bool = True) -> float:
    """A systemd time span (30, 5sec, 1min 30s, 2 h, 1.5h) in seconds, or ValueError."""
    text = str(value).strip()
    total = _sum_parts(_SYSTEMD_PART, text, lambda written: _SYSTEMD_UNIT.get(written or "s")) \
        if len(text) <= MAX_CHARS else None
    if total is None:
        raise ValueError(f"{clip(text)} is not a systemd time span such as 30s, 5min or 1h 30min")
    return _bounded(total, "a systemd time span", text, bounded)


def millis(seconds: float) -> int:
    """Seconds as whole milliseconds, half a millisecond up: the one rounding of a timeout.
    (1.1 * 1000 is 1100.0000000000002 and 0.3 * 1000 is 300.00000000000006: neither is 1101 or 301.)"""
    return math.floor(float(seconds) * 1000 + 0.5)


def seconds_of(ms: int) -> int | float:
    """Whole milliseconds as the seconds a plan holds: an int while whole (2), else 0.8."""
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def ceil_seconds(ms: int) -> int:
    """The next whole second at or above `ms`: php-fpm's timeouts take no fraction."""
    return -(-ms // 1000)


def time_text(seconds: float) -> str:
    """A timeout as nginx and HAProxy read it: `5s` while whole, else `800ms` (both count in
    milliseconds; nginx refuses `0.8s`)."""
    ms = millis(seconds)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def ms_text(ms: float) -> str:
    """Milliseconds as a person reads them in a reason: `800 ms`, `2 s`, `1.5 s`."""
    return f"{ms:g} ms" if ms < 1000 else f"{ms / 1000:g} s"


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return out or "0s"
