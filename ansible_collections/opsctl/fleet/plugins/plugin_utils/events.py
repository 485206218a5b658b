"""An event window (`opsctl_event.window`) and the time zone rule: one reader for every path.

The CLI's profile (opsctl/profile.py), `opsctl check` (opsctl/checks/run.py), the opsctl_preflight
role's filter (check_engine) and the opsctl_logrotate role's slots (logslots) all read a window
here, so a window means the same span to each of them or is refused by each with the same line.

    window:
      start: "2026-11-11T00:00"  # local time in `timezone` (an explicit offset also works)
      duration: 2h               # durations.parse_positive_duration
      timezone: Asia/Shanghai    # an IANA name this machine's tz database knows
      prepare: 1h                # margin before start kept free of maintenance (default 1h)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import unknown_key_problem
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip, parse_duration, parse_positive_duration

WHERE = "opsctl_event.window"
WINDOW_KEYS = ("start", "duration", "timezone", "prepare")
DEFAULT_PREPARE = timedelta(hours=1)
_ZONE = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
_OFFSET = re.compile(r"([+-]?)([0-9]{2}):?([0-9]{2})?")
# Every window opsctl computes with (an event, its prepare margin, a day's log rotation, a
# week's cron scan, a time zone shift) must stay inside what datetime can hold (years 1 to
# 9999): a year's margin at each end keeps every such sum representable.
FIRST_MOMENT = datetime(2, 1, 1)
LAST_MOMENT = datetime(9998, 12, 31, 23, 59)


class WindowError(ValueError):
    """A window, time or zone that cannot be used; the message is one line naming the key."""


@dataclass(frozen=True)
class EventWindow:
    start: datetime  # timezone-aware
    duration: timedelta
    prepare: timedelta
    timezone: str

    @property
    def end(self) -> datetime:
        return self.start + self.duration

    @property
    def protected_start(self) -> datetime:
        """Start of the span kept free of maintenance: the preparation margin included."""
        return self.start - self.prepare

    def protects(self, moment: datetime) -> bool:
        return self.protected_start <= moment < self.end


def zone(value: Any, where: str) -> ZoneInfo:
    """An IANA time zone this machine's tz database knows, or WindowError naming `where`.

    The shape first: ZoneInfo() of '../../etc/passwd' or of a directory ('America') raises
    errors of three kinds, and a name with a newline must never reach a file."""
    try:
        if isinstance(value, str) and _ZONE.fullmatch(value):
            return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    raise WindowError(f"{where}: unknown time zone {clip(value)} (expected an IANA name such as UTC or Europe/Berlin)")


def utc_offset(text: Any) -> timedelta:
    """A host's UTC offset as `date +%z` prints it (+0800, -0530), or WindowError."""
    match = _OFFSET.fullmatch(str(text).strip())
    if not match or int(match.group(2)) > 23 or int(match.group(3) or 0) > 59:
        raise WindowError(f"UTC offset {clip(text)}: expected +HHMM such as +0800")
    sign = -1 if match.group(1) == "-" else 1
    return sign * timedelta(hours=int(match.group(2)), minutes=int(match.group(3) or 0))


def host_zone(host_facts: Mapping[str, Any]) -> tzinfo:
    """A host's time zone from the probe: its name, else its current UTC offset, else UTC."""
    try:
        return zone(str(host_facts.get("timezone") or ""), "host timezone")
    except WindowError:
        pass
    try:
        return timezone(utc_offset(host_facts.get("utc_offset") or "+0000"))
    except WindowError:
        return timezone.utc


def parse_start(value: Any, tz: tzinfo, where: str) -> datetime:
    """A start time (ISO text or YAML's own datetime); a naive one is local time in `tz`."""
    try:
        start = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        raise WindowError(f"{where}: expected a date and time like 2026-11-11T00:00, got {clip(value)}") from None
    return start.replace(tzinfo=tz) if start.tzinfo is None else start


def _duration(value: Any, where: str, parse=parse_duration) -> timedelta:
    try:
        return parse(value)
    except ValueError as exc:
        raise WindowError(f"{where}: {exc}") from None


def parse_window(value: Any, where: str = WHERE) -> EventWindow:
    """A raw window mapping -> EventWindow; every error is one WindowError line naming the key."""
    if not isinstance(value, Mapping):
        raise WindowError(f"{where}: expected a mapping, got {type(value).__name__}")
    problem = unknown_key_problem(value, WINDOW_KEYS, where)
    if problem:
        raise WindowError(problem)
    for key in ("start", "duration", "timezone"):
        if key not in value:
            raise WindowError(f"{where}: missing required key {key!r}")
    # The zone is checked even when start carries an offset: it is what times are shown in.
    tz = zone(value["timezone"], f"{where}.timezone")
    start = parse_start(value["start"], tz, f"{where}.start")
    duration = _duration(value["duration"], f"{where}.duration", parse_positive_duration)
    prepare = _duration(value.get("prepare", DEFAULT_PREPARE), f"{where}.prepare")
    check_bounds(start, duration, prepare, f"{where}.start: {clip(str(value['start']))}")
    return EventWindow(start=start, duration=duration, prepare=prepare, timezone=value["timezone"])


def check_bounds(start: datetime, duration: timedelta, prepare: timedelta, where: str = "") -> None:
    """WindowError when [start - prepare, start + duration) reaches past the calendar's ends.

    Compared on the wall-clock time, without adding anything first: the sum itself is what
    overflows. A UTC offset moves it by less than a day, well within the year's margin."""
    wall = start.replace(tzinfo=None)
    if wall > LAST_MOMENT - duration:
        problem = f"the event window ends after {LAST_MOMENT.date().isoformat()}: too close to the end of the calendar"
    elif wall < FIRST_MOMENT + prepare:
        problem = (f"the event window (with its prepare margin) starts before {FIRST_MOMENT.date().isoformat()}: "
                   "too close to the start of the calendar")
    else:
        return
    raise WindowError(f"{where}: {problem}" if where else problem)


def context(window: EventWindow, name: str = "", shown_in: tzinfo | None = None) -> dict[str, Any]:
    """The `event` a check catalog sees, its times shown in `shown_in` (default: the window's zone)."""
    start = window.start.astimezone(shown_in or zone(window.timezone, f"{WHERE}.timezone"))
    return {"name": name, "start": start, "end": start + window.duration,
            "protected_start": start - window.prepare, "prepare_s": int(window.prepare.total_seconds()),
            "timezone": window.timezone}
