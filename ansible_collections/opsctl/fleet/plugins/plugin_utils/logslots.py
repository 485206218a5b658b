"""When each host rotates its logs: a fleet window, one slot per host, clear of event windows.

The opsctl_logrotate role's filters (plugins/filter/logrotate.py) call this same module, so
`ansible-playbook` and AWX compute exactly the slots that `opsctl logrotate plan` prints.

Rules:
- Hosts that share balancers (the same `opsctl_balancers`) form one pool; a pool's hosts are
  spread evenly over the window in name order, so no two of them rotate in the same minute and
  a stall on one host never coincides with a stall on its neighbour.
- The whole span a host uses (rotation, then old-log pruning `prune_delay` minutes later) must
  lie outside every event's protected span (preparation margin + event). When the fleet window
  would touch one, the window moves to start right after that event ends, and says so.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Iterable, Mapping

from ansible_collections.opsctl.fleet.plugins.plugin_utils import events
from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import unknown_key_problem
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip
# An opsctl_logrotate_window or event window that cannot be used: one line for a person.
from ansible_collections.opsctl.fleet.plugins.plugin_utils.events import WindowError
from ansible_collections.opsctl.fleet.plugins.plugin_utils.logrotate_vars import whole

MAX_SHIFTS = 8
WINDOW_VAR = "opsctl_logrotate_window"
_WINDOW_KEYS = ("start", "minutes", "timezone", "prune_delay_minutes")
_HHMM = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class Window:
    """The fleet's daily rotation window, in a named time zone."""
    start: time
    minutes: int
    timezone: str
    prune_delay: int  # minutes between a host's rotation and its old-log pruning


@dataclass(frozen=True)
class Span:
    """A protected event span: [start, end), timezone-aware."""
    name: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Slot:
    host: str
    pool_size: int
    index: int
    rotate: str       # HH:MM in the window's time zone
    prune: str        # HH:MM in the window's time zone
    timezone: str
    window: str       # "HH:MM-HH:MM" actually used
    moved_for: str    # events the window was moved for, "" if none
    avoids: str       # events whose protected span the slot stays out of

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def event_span(event: Mapping[str, Any]) -> Span | None:
    """The protected span of a raw `opsctl_event` (None when it declares no window)."""
    raw = event.get("window") if event else None
    if not raw:
        return None
    window = events.parse_window(raw)
    return Span(name=str(event.get("name") or "event"), start=window.protected_start, end=window.end)


def _minutes(raw: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = raw.get(key, default)
    minutes = whole(value, low, high)
    if minutes is None:
        raise WindowError(f"{WINDOW_VAR}.{key}: expected a whole number of minutes from {low} to {high}, "
                          f"got {clip(value)}")
    return minutes


def _start(value: Any) -> time:
    if isinstance(value, int) and not isinstance(value, bool):
        # A number (-e start=4, or a YAML 1.1 loader's sexagesimal 04:00 = 240) is no time of day.
        raise WindowError(f"{WINDOW_VAR}.start: got the number {value!r}: quote the time, e.g. start: \"04:00\"")
    match = _HHMM.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise WindowError(f"{WINDOW_VAR}.start: expected a time HH:MM such as \"04:00\", got {value!r}")
    return time(int(match[1]), int(match[2]))


def check_zone(value: Any, where: str) -> str:
    """An IANA time zone name known to this machine's tz database (events.zone), or WindowError."""
    events.zone(value, where)
    return value


def parse_window(raw: Any) -> Window:
    """The fleet window from its inventory value; every error names the key and is one line."""
    if not isinstance(raw, Mapping):
        raise WindowError(f"{WINDOW_VAR}: expected a mapping such as {{start: \"04:00\", minutes: 60, "
                          f"timezone: UTC, prune_delay_minutes: 30}}, got {raw!r}")
    unknown = unknown_key_problem(raw, _WINDOW_KEYS, WINDOW_VAR)
    if unknown:
        raise WindowError(unknown)
    # The prune runs prune_delay_minutes after each rotation and must itself stay clear of every
    # event: a negative or zero delay would put it before or at the rotation, outside the span checked.
    return Window(start=_start(raw.get("start", "04:00")), minutes=_minutes(raw, "minutes", 60, 1, 720),
                  timezone=check_zone(raw.get("timezone", "UTC"), f"{WINDOW_VAR}.timezone"),
                  prune_delay=_minutes(raw, "prune_delay_minutes", 30, 1, 720))


def window_error(raw: Any) -> str:
    """'' when `raw` is a usable window, else why not (the role's assert shows it)."""
    try:
        parse_window(raw)
    except WindowError as exc:
        return str(exc)
    return ""


def _daily_span(window: Window, day: date, start: time) -> tuple[datetime, datetime]:
    begin = datetime.combine(day, start, tzinfo=events.zone(window.timezone, WINDOW_VAR))
    return begin, begin + timedelta(minutes=window.minutes + window.prune_delay)


def _clash(window: Window, start: time, span: Span) -> bool:
    """Would the daily window, on any day the event touches, overlap its protected span?"""
    tz = events.zone(window.timezone, WINDOW_VAR)
    first = span.start.astimezone(tz).date() - timedelta(days=1)
    last = span.end.astimezone(tz).date()
    day = first
    while day <= last:
        begin, end = _daily_span(window, day, start)
        if begin < span.end and span.start < end:
            return True
        day += timedelta(days=1)
    return False


def effective_start(window: Window, spans: Iterable[Span]) -> tuple[time, list[str]]:
    """The window start actually used, and the events it was moved for."""
    spans = list(spans)
    start, moved = window.start, []
    for _shift in range(MAX_SHIFTS):
        clashing = [s for s in spans if _clash(window, start, s)]
        if not clashing:
            return start, moved
        latest = max(clashing, key=lambda s: s.end)
        after = latest.end.astimezone(events.zone(window.timezone, WINDOW_VAR)) + timedelta(minutes=5)
        start = time(after.hour, after.minute - after.minute % 5)
        moved += [s.name for s in clashing if s.name not in moved]
    raise ValueError("no daily log rotation window clear of every event window: "
                     "declare a wider or different opsctl_logrotate_window")


def pool_peers(host: str, balancers_of: Mapping[str, Any]) -> list[str]:
    """Hosts behind exactly the same balancers as `host` (itself included), in name order."""
    def key(name: str) -> str:
        return json.dumps(balancers_of.get(name) or [], sort_keys=True, default=str)
    mine = key(host)
    return sorted(name for name in balancers_of if key(name) == mine)


def slot_for(host: str, peers: list[str], window: Window, spans: Iterable[Span]) -> Slot:
    spans = list(spans)
    if host not in peers:
        raise ValueError(f"{host} is not among its own pool {peers}")
    if len(peers) > window.minutes:
        raise ValueError(f"{len(peers)} hosts share balancers but the rotation window has only "
                         f"{window.minutes} minutes: widen opsctl_logrotate_window.minutes")
    start, moved = effective_start(window, spans)
    index = peers.index(host)
    base = datetime.combine(date(2000, 1, 1), start)
    rotate = base + timedelta(minutes=index * window.minutes // len(peers))
    prune = rotate + timedelta(minutes=window.prune_delay)
    end = base + timedelta(minutes=window.minutes)
    return Slot(host=host, pool_size=len(peers), index=index, rotate=f"{rotate:%H:%M}",
                prune=f"{prune:%H:%M}", timezone=window.timezone,
                window=f"{base:%H:%M}-{end:%H:%M}", moved_for=", ".join(moved),
                avoids=", ".join(f"{s.name} {s.start:%Y-%m-%d %H:%M}-{s.end:%H:%M %Z}" for s in spans))


def host_local(hhmm: str, window_tz: str, utc_offset: str) -> dict[str, int]:
    """A window-time HH:MM as the host's cron sees it, given the host's UTC offset (+0800)."""
    hour, minute = (int(x) for x in hhmm.split(":"))
    today = datetime.now(events.zone(window_tz, f"{WINDOW_VAR}.timezone")).replace(hour=hour, minute=minute, second=0, microsecond=0)
    local = today.astimezone(timezone.utc) + events.utc_offset(utc_offset)
    return {"hour": local.hour, "minute": local.minute}


def fleet_slot(host: str, host_vars: Mapping[str, Mapping[str, Any]], raw_window: Mapping[str, Any]) -> Slot:
    """`host`'s slot given every inventory host's vars: its pool, and every declared event."""
    balancers_of = {name: v.get("opsctl_balancers") for name, v in host_vars.items()}
    # The same event declared for many hosts (group_vars) counts once: by its span, not by its
    # raw mapping, whose keys may not sort ({1: x, name: y}).
    events = [v.get("opsctl_event") for v in host_vars.values() if v.get("opsctl_event")]
    unique = {(s.name, s.start, s.end): s for s in map(event_span, events) if s}
    spans = sorted(unique.values(), key=lambda s: s.start)
    return slot_for(host, pool_peers(host, balancers_of), parse_window(raw_window), spans)


def _filter_slot(host: str, hostvars: Mapping[str, Any], all_hosts: Iterable[str],
                 raw_window: Mapping[str, Any]) -> dict[str, Any]:
    wanted = ("opsctl_balancers", "opsctl_event")
    host_vars = {h: {k: hostvars[h].get(k) for k in wanted} for h in all_hosts}
    return fleet_slot(host, host_vars, raw_window).as_dict()
