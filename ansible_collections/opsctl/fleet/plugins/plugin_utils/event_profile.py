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
      client_timeout_s: 10         # when the client (browser, app, balancer) gives up
      php_worker_memory_mb: 48     # resident memory of one php-fpm worker
      pools:                       # optional: how the host's peak splits between its php-fpm pools
        www: 8                     # relative weights, by pool name or listen address; a pool
        127.0.0.1:9100: 1          # not named weighs 1, so without `pools` they share evenly
      window:                      # optional: when the event runs
        start: "2026-11-11T00:00"  # local time in `timezone` (an explicit offset also works)
        duration: 2h
        timezone: Asia/Shanghai
        prepare: 1h                # margin before start kept free of maintenance (default 1h)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils import events
from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import unknown_key_problem
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip
from ansible_collections.opsctl.fleet.plugins.plugin_utils.events import EventWindow

VAR_NAME = "opsctl_event"
_TOP_KEYS = {"name", "peak_qps", "concurrency", "request_time", "client_timeout_s",
             "php_worker_memory_mb", "window", "pools"}
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
    )
