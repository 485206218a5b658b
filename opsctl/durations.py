"""Parse the short durations people write in inventories (90s, 30m, 2h, 1h30m, or seconds) and
the times nginx's configuration holds (60, 500ms, 1m30s), both within one bound.

Stdlib only and free of opsctl imports: the opsctl_nginx role carries this same file as an
Ansible filter plugin (a symlink in its filter_plugins), so the role reads nginx times by this rule.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# No event, margin or timeout opsctl reads is longer than this; a larger figure is a typo, and
# a bound keeps every datetime sum (start + duration) far from Python's limits.
MAX_SECONDS = 3650 * 86400
# nginx's own syntax: whole numbers only, no unit is seconds, and longer units than ours.
_NGINX_PART = re.compile(r"([0-9]+)(ms|s|m|h|d|w|M|y)?")
_NGINX_UNIT_SECONDS = {**_UNIT_SECONDS, "w": 604800, "M": 2592000, "y": 31536000}
SHOWN_CHARS = 60


def cut(text: str) -> str:
    """Text as a message may hold it: a 5000-digit figure is cut to SHOWN_CHARS, not echoed whole."""
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def shown(value: object) -> str:
    """A value as an error message shows it: its repr, cut."""
    return repr(cut(value)) if isinstance(value, str) else cut(repr(value))


class OutOfRange(ValueError):
    """A duration or time beyond MAX_SECONDS: well-formed, and longer than anything opsctl reads."""


def parse_duration(value: object) -> timedelta:
    """Return a timedelta, or raise ValueError with a message fit for a person."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 90s, 30m or 2h, got {shown(value)}")
    if isinstance(value, (int, float)):
        seconds = float(min(value, MAX_SECONDS + 1))   # 10**400 has no float; it is too long anyway
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"expected a duration like 90s, 30m or 2h, got {shown(value)}")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration like 90s, 30m or 2h, got {shown(value)}")
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"a duration must be at most 3650d, got {shown(value)}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {shown(value)}")
    return timedelta(seconds=seconds)


def nginx_seconds(value: object) -> float:
    """An nginx time (60, 60s, 500ms, 1m30s) in seconds, or ValueError with a one-line message.

    float(), not int(): a figure of thousands of digits is simply too large (int() refuses it
    with Python's own error); the bound is the one every duration here has."""
    text = str(value).strip()
    total, pos = 0.0, 0
    for match in _NGINX_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _NGINX_UNIT_SECONDS[match.group(2) or "s"]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"{shown(text)} is not an nginx time such as 60s, 1m30s or 500ms")
    if not math.isfinite(total) or total > MAX_SECONDS:
        raise OutOfRange(f"an nginx time must be at most 3650d, got {shown(text)}")
    return total


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return out or "0s"


class FilterModule:
    """Ansible filter: nginx times inside the opsctl_nginx role, by the same rule."""

    def filters(self) -> dict[str, object]:
        return {"opsctl_nginx_seconds": nginx_seconds}
