"""The event profile, one schema for the opsctl CLI and the collection's roles (capacity model):
what a group of hosts must carry during an event, declared in group_vars.

Schema (variable ``opsctl_event``; every figure is per host):

    opsctl_event:
      name: singles-day            # optional label shown in reports
      peak_qps: 640                # expected peak requests per second per host
      concurrency: 2000            # optional: peak concurrent client connections per host
      request_time:
        typical_ms: 80             # median service time of a PHP request
        p99_ms: 400                # 99th percentile; the longest legitimate request
      client_timeout_s: 10         # when the client (browser, app, balancer) gives up; to the
                                   # millisecond (1, 0.8); at least p99 + 300 ms (connect, a
                                   # queue wait and nginx's 504 on its way back: upstream_timeouts.py)
      php_worker_memory_mb: 48     # resident memory of one php-fpm worker
      pools:                       # optional: how the host's peak splits between its php-fpm pools
        www: 8                     # relative weights, by pool name or listen address; a pool
        127.0.0.1:9100: 1          # not named weighs 1, so without `pools` they share evenly
      balancer:                    # optional: the L4 / cloud / hardware balancer in front of the hosts
        name: slb                  # a label for reports
        layer: 7                   # 4 (passes TCP through) or 7 (its own connections to nginx)
        idle_timeout_s: 60         # when it closes an idle connection
        health_check_interval_s: 5 # how often it probes each backend
        health_check_fall: 3       # failed probes before it takes a backend out
      window:                      # optional: when the event runs
        start: "2026-11-11T00:00"  # local time in `timezone` (an explicit offset also works)
        duration: 2h
        timezone: Asia/Shanghai
        prepare: 1h                # margin before start kept free of maintenance (default 1h)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils import events, upstream_timeouts
from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import unknown_key_problem
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip
from ansible_collections.opsctl.fleet.plugins.plugin_utils.events import EventWindow

VAR_NAME = "opsctl_event"
_TOP_KEYS = {"name", "peak_qps", "concurrency", "request_time", "client_timeout_s",
             "php_worker_memory_mb", "window", "pools", "balancer"}
_BALANCER_KEYS = {"name", "layer", "idle_timeout_s", "health_check_interval_s", "health_check_fall"}
# The longest idle timeout a balancer offers (AWS ALB: 4000 s), and bounds that catch typos.
BALANCER_LIMITS = {"idle_timeout_s": 4000, "health_check_interval_s": 300, "health_check_fall": 100}
_REQUIRED = ("peak_qps", "request_time", "client_timeout_s", "php_worker_memory_mb")
_RT_KEYS = {"typical_ms", "p99_ms"}
MAX_POOL_WEIGHT = 1000   # relative weights; a larger figure is a typo
MAX_POOLS = 256


# The largest figure of each key the capacity model computes with: inf, nan and 10**400 are no
# figures, and int(inf) raised OverflowError.
EVENT_LIMITS = {"peak_qps": 10_000_000, "concurrency": 10_000_000, "typical_ms": 3_600_000,
                "p99_ms": 3_600_000, "client_timeout_s": 3600, "php_worker_memory_mb": 65536}


class ProfileError(ValueError):
    """An event profile that does not follow the schema; one line naming the key."""


@dataclass(frozen=True)
class Balancer:
    """The balancer in front of a group's hosts that opsctl does not manage (an SLB, an ALB, an
    F5, LVS): what its own timeouts mean for the hosts behind it."""
    name: str = "balancer"
    layer: int = 4
    idle_timeout_s: float | None = None
    health_check_interval_s: float | None = None
    health_check_fall: int | None = None

    @property
    def ejection_s(self) -> float | None:
        """How long a backend that stopped answering keeps getting requests: fall x interval."""
        if self.health_check_interval_s is None or self.health_check_fall is None:
            return None
        return self.health_check_interval_s * self.health_check_fall

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "layer": self.layer, "idle_timeout_s": self.idle_timeout_s,
                "health_check_interval_s": self.health_check_interval_s,
                "health_check_fall": self.health_check_fall, "ejection_s": self.ejection_s}


@dataclass(frozen=True)
class EventProfile:
    peak_qps: float
    typical_ms: float
    p99_ms: float
    client_timeout_s: float
    php_worker_memory_mb: float
    name: str = ""
    concurrency: int | None = None
    window: EventWindow | None = None
    pools: tuple[tuple[str, int], ...] = ()   # (pool name or listen address, weight)
    balancer: Balancer | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "peak_qps": self.peak_qps,
            "concurrency": self.concurrency,
            "request_time": {"typical_ms": self.typical_ms, "p99_ms": self.p99_ms},
            "client_timeout_s": self.client_timeout_s,
            "php_worker_memory_mb": self.php_worker_memory_mb,
            "window": None,
            "pools": dict(self.pools),
            "balancer": self.balancer.as_dict() if self.balancer else None,
        }
        if self.window:
            out["window"] = {
                "start": self.window.start.isoformat(),
                "end": self.window.end.isoformat(),
                "timezone": self.window.timezone,
                "prepare_s": int(self.window.prepare.total_seconds()),
            }
        return out


def _number(data: dict, key: str, where: str, *, integer: bool = False,
            minimum: float = 0.0, maximum: float = 1e9) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProfileError(f"{where}.{key}: expected a number, got {clip(value)}")
    # The range first: an int too large for a float (10**400) must be refused, not overflow.
    if not minimum < value <= maximum:
        raise ProfileError(f"{where}.{key}: {clip(value)} is out of range: expected a number above {minimum:g} "
                           f"and at most {maximum:.0f}")
    if integer and not float(value).is_integer():
        raise ProfileError(f"{where}.{key}: expected a whole number, got {clip(value)}")
    return float(value)


def _mapping(value: Any, where: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: expected a mapping, got {type(value).__name__}")
    problem = unknown_key_problem(value, allowed, where)
    if problem:
        raise ProfileError(problem)
    return value


def _window(value: Any, where: str) -> EventWindow:
    """The window by the rule every path shares (plugin_utils/events.py), errors as ProfileError."""
    try:
        return events.parse_window(value, where)
    except events.WindowError as exc:
        raise ProfileError(str(exc)) from None


def _pools(value: Any, where: str) -> tuple[tuple[str, int], ...]:
    """`pools: {www: 8, "127.0.0.1:9100": 1}`: whole weights from 1, keyed by a pool's name or
    listen address (capacity.pool_weights applies them)."""
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: expected a mapping of pool name or listen address to a weight, "
                           f"got {type(value).__name__}")
    if len(value) > MAX_POOLS:
        raise ProfileError(f"{where}: {len(value)} pools, at most {MAX_POOLS}")
    out = []
    for key, weight in value.items():
        if not isinstance(key, str) or not key or any(c.isspace() for c in key) or len(key) > 200:
            raise ProfileError(f"{where}: {clip(key)} is not a pool name or listen address")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 1 <= weight <= MAX_POOL_WEIGHT:
            raise ProfileError(f"{where}.{key}: expected a whole weight from 1 to {MAX_POOL_WEIGHT}, got {clip(weight)}")
        out.append((key, weight))
    return tuple(out)


def _balancer(value: Any, where: str) -> Balancer:
    data = _mapping(value, where, _BALANCER_KEYS)
    name = data.get("name", "balancer")
    if not isinstance(name, str) or not name:
        raise ProfileError(f"{where}.name: expected text, got {clip(name)}")
    layer = data.get("layer", 4)
    if layer not in (4, 7) or isinstance(layer, bool):
        raise ProfileError(f"{where}.layer: expected 4 or 7, got {clip(layer)}")

    def figure(key: str, integer: bool = False) -> float | None:
        if data.get(key) is None:
            return None
        return _number(data, key, where, integer=integer, maximum=BALANCER_LIMITS[key])
    interval, fall = figure("health_check_interval_s"), figure("health_check_fall", integer=True)
    if (interval is None) != (fall is None):
        raise ProfileError(f"{where}: give health_check_interval_s and health_check_fall together "
                           "(the balancer takes a backend out after fall x interval)")
    return Balancer(name=name, layer=int(layer), idle_timeout_s=figure("idle_timeout_s"),
                    health_check_interval_s=interval, health_check_fall=int(fall) if fall is not None else None)


def parse_profile(value: Any, where: str = VAR_NAME) -> EventProfile:
    """Validate a raw ``opsctl_event`` value; every error names the offending key."""
    data = _mapping(value, where, _TOP_KEYS)
    for key in _REQUIRED:
        if key not in data:
            raise ProfileError(f"{where}: missing required key {key!r}")
    rt = _mapping(data["request_time"], f"{where}.request_time", _RT_KEYS)
    for key in sorted(_RT_KEYS):
        if key not in rt:
            raise ProfileError(f"{where}.request_time: missing required key {key!r}")
    typical = _number(rt, "typical_ms", f"{where}.request_time", maximum=EVENT_LIMITS["typical_ms"])
    p99 = _number(rt, "p99_ms", f"{where}.request_time", maximum=EVENT_LIMITS["p99_ms"])
    if p99 < typical:
        raise ProfileError(f"{where}.request_time.p99_ms: {p99:g} is below typical_ms {typical:g}")
    client_timeout = _number(data, "client_timeout_s", where, maximum=EVENT_LIMITS["client_timeout_s"])
    if client_timeout * 1000 <= p99:
        raise ProfileError(
            f"{where}.client_timeout_s: {client_timeout:g}s is not above the p99 request time "
            f"({p99:g} ms): clients would give up on legitimate requests")
    too_short = upstream_timeouts.client_problem(client_timeout, p99)
    if too_short:
        raise ProfileError(f"{where}.client_timeout_s: {too_short}")
    concurrency = None
    if data.get("concurrency") is not None:
        concurrency = int(_number(data, "concurrency", where, integer=True, maximum=EVENT_LIMITS["concurrency"]))
    name = data.get("name", "")
    if not isinstance(name, str):
        raise ProfileError(f"{where}.name: expected text, got {clip(name)}")
    return EventProfile(
        name=name,
        peak_qps=_number(data, "peak_qps", where, maximum=EVENT_LIMITS["peak_qps"]),
        concurrency=concurrency,
        typical_ms=typical,
        p99_ms=p99,
        client_timeout_s=client_timeout,
        php_worker_memory_mb=_number(data, "php_worker_memory_mb", where, maximum=EVENT_LIMITS["php_worker_memory_mb"]),
        window=_window(data["window"], f"{where}.window") if data.get("window") is not None else None,
        pools=_pools(data["pools"], f"{where}.pools") if data.get("pools") is not None else (),
        balancer=_balancer(data["balancer"], f"{where}.balancer") if data.get("balancer") is not None else None,
    )
