"""The state of a watch: every host's last sample, figures, history and whether it answers.
Pure: events in (opsctl/watch/sessions.py's), figures out; the clock is an argument."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

from opsctl.watch import figures as fg
from opsctl.watch.sessions import Event

SERIES = ("rps", "queue", "overflows", "499", "5xx", "fpm_active")   # what the sparklines draw


@dataclass
class HostState:
    name: str
    size: int                              # samples in the sparklines' minute
    state: str = "connecting"              # connecting | ok | lost | gave-up
    error: str = ""
    last_at: float | None = None           # when its last sample arrived
    raw: fg.Raw | None = None
    figures: fg.Figures | None = None
    samples: int = 0
    series: dict[str, deque] = field(default_factory=dict)
    close_waits: deque = field(default_factory=lambda: deque(maxlen=fg.CLOSE_WAIT_RISE + 1))

    def __post_init__(self) -> None:
        self.series = {name: deque(maxlen=self.size) for name in SERIES}


def _point(fig: fg.Figures, name: str) -> float | None:
    share = {"499": fig.share("499"), "5xx": fig.share_5xx}
    return {"rps": fig.rps, "queue": fig.queue_ratio, "overflows": fig.overflows_ps,
            "fpm_active": fig.fpm_active, **share}[name]


class Board:
    def __init__(self, hosts: list[str], interval: float) -> None:
        self.interval = interval
        self.size = fg.history_size(interval)
        self.hosts = {name: HostState(name, self.size) for name in hosts}
        self.fleet_series: dict[str, deque] = {name: deque(maxlen=self.size) for name in SERIES}

    def apply(self, event: Event) -> dict[str, Any] | None:
        """Take one event; the record of a sample (or of a state change), None for noise."""
        host = self.hosts[event.host]
        if event.kind == "sample":
            return self._sample(host, event)
        if event.kind in ("lost", "gave-up"):
            host.state, host.error = event.kind, event.error
            host.raw = None   # the next session's counters start afresh: no rate across sessions
            return {"host": host.name, "time": event.at, "state": host.state, "error": host.error}
        # connecting (a lost host keeps showing lost, with its reason, until a sample arrives),
        # noise (a line that is not a sample), ended: nothing to record.
        return None

    def _sample(self, host: HostState, event: Event) -> dict[str, Any] | None:
        try:
            raw = fg.parse_line(event.line)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            host.error = str(exc)
            return None
        fig = fg.figures(host.name, event.at, raw, host.raw)
        host.close_waits.append(fig.close_wait)
        fig = replace(fig, close_wait_growing=fg.growing(list(host.close_waits)))
        host.raw, host.figures, host.last_at = raw, fig, event.at
        host.state, host.error, host.samples = "ok", "", host.samples + 1
        for name in SERIES:
            host.series[name].append(_point(fig, name))
        return {"host": host.name, "time": event.at, "due": event.due, "figures": fig.as_dict()}

    def lost(self, name: str, now: float) -> bool:
        """Shown as lost: its session says so, or no sample for two intervals (and a bit)."""
        host = self.hosts[name]
        if host.state in ("lost", "gave-up"):
            return True
        return host.last_at is not None and now - host.last_at > 2 * self.interval + 0.5

    def refreshed(self, since: float) -> bool:
        """Every host that answers has sent a sample since SINCE (epoch s; the tick that asked for
        them): the screen can show a whole refresh. Hosts still connecting, lost or given up are
        not waited for."""
        return all(h.last_at is not None and h.last_at >= since for h in self.hosts.values()
                   if h.state == "ok" and not self.lost(h.name, since))

    def lost_hosts(self, now: float) -> list[str]:
        return [name for name in self.hosts if self.lost(name, now)]

    def fleet(self, now: float) -> fg.Fleet:
        return fg.fleet({n: h.figures for n, h in self.hosts.items()}, self.lost_hosts(now))

    def tick_fleet(self, now: float) -> fg.Fleet:
        """The fleet's totals, also appended to its sparklines (call once per interval)."""
        total = self.fleet(now)
        share = {"499": total.share("499"),
                 "5xx": (sum(total.statuses.get(c, 0) for c in ("502", "503", "504")) / total.requests
                         if total.requests else None)}
        points = {"rps": total.rps, "queue": total.queue_ratio, "overflows": total.overflows_ps,
                  "fpm_active": total.fpm_active, **share}
        for name in SERIES:
            self.fleet_series[name].append(points[name])
        return total

    def ordered(self, now: float) -> list[HostState]:
        """Hosts worst first (figures.worst_first)."""
        order = fg.worst_first([(n, h.figures, self.lost(n, now)) for n, h in self.hosts.items()])
        return [self.hosts[name] for name, _, _ in order]

    def complete(self) -> bool:
        """Every host has rates (two samples) or has failed: what --once waits for."""
        return all(h.samples >= 2 or h.state in ("lost", "gave-up") for h in self.hosts.values())

    def snapshot(self, now: float) -> dict[str, Any]:
        """--once --format json: the fleet and every host, worst first."""
        hosts = []
        for host in self.ordered(now):
            entry: dict[str, Any] = {"host": host.name, "state": "lost" if self.lost(host.name, now) else host.state,
                                     "error": host.error, "time": host.last_at,
                                     "figures": host.figures.as_dict() if host.figures else None}
            if host.raw is not None:
                entry["counters"] = {"listen_overflows": host.raw.listen_overflows,
                                     "listen_drops": host.raw.listen_drops}
            hosts.append(entry)
        return {"version": 1, "interval": self.interval, "time": now,
                "fleet": self.fleet(now).as_dict(), "hosts": hosts}
