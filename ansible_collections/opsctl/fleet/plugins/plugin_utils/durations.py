"""Parse the short durations people write in inventories: 90s, 30m, 2h, 1h30m, or seconds."""

from __future__ import annotations

import math
import re
from datetime import timedelta

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# No event, margin or timeout opsctl reads is longer than this; a larger figure is a typo, and
# a bound keeps every datetime sum (start + duration) far from Python's limits.
MAX_SECONDS = 3650 * 86400


def parse_duration(value: object) -> timedelta:
    """Return a timedelta, or raise ValueError with a message fit for a person."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected a duration like 90s, 30m or 2h, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(min(value, MAX_SECONDS + 1))   # 10**400 has no float; it is too long anyway
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"expected a duration like 90s, 30m or 2h, got {value!r}")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    else:
        raise ValueError(f"expected a duration like 90s, 30m or 2h, got {value!r}")
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise ValueError(f"a duration must be at most 3650d, got {value!r}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "") + (f"{secs}s" if secs else "")
    return out or "0s"
