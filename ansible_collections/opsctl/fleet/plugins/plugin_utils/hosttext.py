"""Values read out of a host's own text (probe output, php-fpm -tt, nginx -T, unit files).

A host's configuration is data, not opsctl's input: a value that is no number or no time is
None (or the caller's default), never an exception, and times follow durations.py.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils import durations


def kv(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def integer(value: Any, default: int | None = None) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


# A host's configuration is data: a time longer than any duration a person writes is no time
# (int() of 4300 digits raises; a long run of digits costs the regex), the bound opsctl's own.
MAX_TIME_CHARS = durations.MAX_CHARS


def nginx_seconds(value: str) -> float | None:
    """An nginx time by durations.nginx_seconds, kept however long; None when it is no time."""
    try:
        return durations.nginx_seconds(value, bounded=False) if len(value) <= MAX_TIME_CHARS else None
    except ValueError:
        return None


def fpm_seconds(value: str) -> float | None:
    """php-fpm -tt prints times as 0s, 30s; config files may say 30, 30s, 1m, 1h (durations.fpm_seconds)."""
    try:
        return durations.fpm_seconds(value)
    except ValueError:
        return None


def systemd_seconds(value: str, default: float) -> float:
    """A unit's time span by durations.systemd_seconds; `default` when the host's text is no time."""
    try:
        return durations.systemd_seconds(value, bounded=False)
    except ValueError:
        return default
