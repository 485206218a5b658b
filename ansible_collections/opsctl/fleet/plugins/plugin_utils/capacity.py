"""The capacity model: kernel, limits, nginx and php-fpm settings sized from an event profile.

The opsctl_capacity role's filters (plugins/filter/capacity.py) call this module and so does
the CLI, so `ansible-playbook` and AWX derive exactly the values that `opsctl harden --explain`
prints. Its value rules are configvalues.py's.

`derive(event, facts, overrides, force)` returns key -> {"value": ..., "reason": "..."}; every
reason is one line with the arithmetic a person can redo. Overrides are applied where each key
is decided, so the keys computed from it follow (override the read timeout and the backlog and
request_terminate_timeout move with it); an override that breaks an invariant raises
CapacityError unless `force`.

Decisions worth knowing (the failure modes are in FAILURE-MODES.md):
- Upstream read timeout: above p99 with room for a queue wait (max(2 x p99, p99 + 1 s)), and
  below the client timeout so nginx, not the client, sees a sick backend (F2). Whole seconds
  where they fit, else milliseconds (upstream_timeouts.py, the one rule); php-fpm's
  request_terminate_timeout is its next whole second up, so nginx answers 504 first.
- php-fpm listen.backlog: Little's law, arrival rate x acceptable queue wait (read timeout -
  p99, at most 1 s), never more than the pool can drain within that wait: a longer queue only
  holds requests nginx has already given up on (F1). An override above arrival rate x (read
  timeout - p99) is refused.
- pm = static with pm.max_requests = 0: the event needs every worker forked before the spike
  (dynamic spawns at most pm.max_spawn_rate per maintenance tick), and in a static pool
  workers take requests round-robin from one accept queue, so any max_requests makes the whole
  pool recycle at once (F5) whatever the per-host value. When pm is overridden to dynamic,
  pm.max_requests is spread deterministically per host (a hash of the host name) so hosts
  behind one balancer never recycle together.
- Several pools on a host (PHP versions side by side, a pool per site): the host is sized as
  one (the keys above are its totals), then `php_fpm.pools` splits the peak and the workers
  between every running pool by the event profile's weights (opsctl_event.pools; a pool not
  named weighs 1, so by default they share evenly): each pool gets its share of the workers
  (largest remainder, at least one each) and a backlog by Little's law on its share of the peak.
"""

# F1-F7 and seed NNN: docs/failure-modes.md and docs/incidents.md of the opsctl repository.

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ansible_collections.opsctl.fleet.plugins.plugin_utils import configvalues as _values
from ansible_collections.opsctl.fleet.plugins.plugin_utils import event_profile, upstream_timeouts
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import ceil_seconds, millis, ms_text, seconds_of

NR_OPEN = 1_048_576          # fs.nr_open default: no process limit may exceed it
SOMAXCONN_FLOOR = 4096       # Linux default since 5.4; never lower it
TW_BUCKETS_FLOOR = 262_144   # default on hosts with a few GB; never lower it
NOFILE_FLOOR = 65_535        # seed 002's per-process figure for an event
NGINX_BACKLOG_FLOOR = 511    # nginx's own default
FILE_MAX_FLOOR = 1_048_576
OS_RESERVE_FLOOR_MB = 512
NGINX_WORKER_MB = 64         # an nginx worker with proxy buffers under load
TIME_WAIT_S = 60             # Linux TCP_TIMEWAIT_LEN
MAX_QUEUE_WAIT_S = 1.0      # a request queued longer than this has already failed its user
SOMAXCONN_MAX = 65535
MAX_REQUESTS_BASE = 2000     # used only when pm is dynamic
MAX_REQUESTS_SPREAD = 2000
HAPROXY_FALL = 2             # one failed health check may be a blip; two in a row is a sick host
HAPROXY_RISE = 2
HAPROXY_RETRIES = 2          # connection attempts after the first, the last one to another server
HAPROXY_CHECK_FLOOR_MS = 1000   # a health page answers in milliseconds; a host slower than this is sick
HAPROXY_MIN_INTER_MS = 10      # sub-second clients (a 350 ms API) need checks this often
HAPROXY_MAX_INTER_MS = 2000     # HAProxy's default interval: never check less often

INT_KEYS = (
    "sysctl.net.core.somaxconn", "sysctl.net.ipv4.tcp_max_syn_backlog",
    "sysctl.net.ipv4.tcp_max_tw_buckets", "sysctl.net.ipv4.tcp_tw_reuse",
    "sysctl.net.core.netdev_max_backlog", "sysctl.fs.file-max", "limits.nofile",
    "php_fpm.listen_backlog", "php_fpm.pm_max_children", "php_fpm.pm_start_servers",
    "php_fpm.pm_min_spare_servers", "php_fpm.pm_max_spare_servers", "php_fpm.pm_max_requests",
    "php_fpm.request_terminate_timeout", "php_fpm.process_control_timeout",
    "php_fpm.request_slowlog_timeout", "php_fpm.rlimit_files",
    "nginx.worker_connections", "nginx.worker_rlimit_nofile", "nginx.listen_backlog",
    "nginx.upstream_max_fails", "nginx.upstream_fail_timeout", "nginx.limit_conn",
    "nginx.keepalive_timeout",
) + (
    "haproxy.timeout_connect_ms", "haproxy.timeout_server_ms", "haproxy.timeout_queue_ms",
    "haproxy.timeout_client_ms", "haproxy.timeout_check_ms", "haproxy.check_inter_ms", "haproxy.check_fall",
    "haproxy.check_rise", "haproxy.retries",
)
# Seconds to the millisecond (2, or 0.8 where whole seconds do not fit: upstream_timeouts.py).
TIMEOUT_KEYS = ("nginx.upstream_connect_timeout", "nginx.upstream_send_timeout", "nginx.upstream_read_timeout")
KEYS = INT_KEYS + TIMEOUT_KEYS + ("php_fpm.pm", "nginx.worker_processes")
OVERRIDES_VAR = "opsctl_capacity_overrides"
MAX_OVERRIDE = 10 ** 12 - 1   # no capacity setting is larger; a longer figure is a typo
# The largest figure of each host fact the model computes with (the event's: event_profile.py).
FACT_LIMITS = {"cpus": 65536, "memory_mb": 1 << 40, "nofile_max": 1 << 31}


class CapacityError(ValueError):
    """An event profile, host facts or override the model cannot honour; one line."""


@dataclass(frozen=True)
class PoolIn:
    """A running pool as the model sizes it: the label check results use, name, listen, weight."""
    label: str
    name: str
    listen: str
    weight: int = 1


@dataclass(frozen=True)
class Inputs:
    peak_qps: float
    concurrency: int | None
    typical_s: float
    p99_s: float
    client_timeout_s: float
    p99_ms: float
    worker_mb: float
    cpus: int
    memory_mb: int
    php_version: str
    host: str
    nofile_max: int = NR_OPEN   # the most open files a process may have here (fs.nr_open, or a container's cap)
    pools: tuple[PoolIn, ...] = ()   # every pool of every running master; () = one pool, unnamed
    balancer: event_profile.Balancer | None = None   # the one in front that opsctl does not manage


def _number(data: Mapping, key: str, where: str) -> float:
    value = data.get(key) if isinstance(data, Mapping) else None
    high = FACT_LIMITS[key]
    # The range before float(): 10**400 has no float; nan fails every comparison, so it fails this one.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
        raise CapacityError(f"{where}.{key}: expected a number above 0 and at most {high}, "
                            f"got {_values.clip(value)}")
    return float(value)


def _cpus(facts: Mapping) -> int:
    """Whole CPUs: a cgroup quota of 0.5 still runs one nginx worker (int() made it 0 workers and
    a division by zero); 2.5 CPUs of time keep 3 workers busy."""
    return math.ceil(_number(facts, "cpus", "facts"))


def facts_problem(facts: Any) -> str:
    """Why a host's probed facts cannot feed the model, or "". A probe that printed nonsense
    (`"cpus": [1, 2]`) is that host's failure, never bad input that stops the fleet."""
    if not isinstance(facts, Mapping):
        return f"the capacity probe printed a JSON {type(facts).__name__}, not an object of facts"
    for key in ("cpus", "memory_mb", "nofile_max"):
        if key == "nofile_max" and not facts.get(key):
            continue   # optional: NR_OPEN when the probe cannot tell
        try:
            _number(facts, key, "facts")
        except CapacityError as exc:
            return f"the capacity probe's {key} is unusable: {exc}"
    return ""


def pool_weights(declared: Mapping[str, int], pools: list[Mapping[str, Any]]) -> list[int]:
    """Each pool's weight: the event profile's for its listen address (nginx's `unix:` prefix
    or not), else for its name, else 1. The one rule the model and the check catalog share."""
    def weight(pool: Mapping[str, Any]) -> int:
        listen = str(pool.get("listen") or "")
        for key in (listen, f"unix:{listen}", str(pool.get("name") or "")):
            if key in declared:
                return int(declared[key])
        return 1
    return [weight(pool) for pool in pools]


def _pools_in(facts: Mapping, declared: Mapping[str, int]) -> tuple[PoolIn, ...]:
    pools = [p for m in facts.get("php_fpm_masters") or [] if isinstance(m, Mapping)
             for p in m.get("pools") or [] if isinstance(p, Mapping)]
    return tuple(PoolIn(str(p.get("label") or f"pool {p.get('name')}"), str(p.get("name") or ""),
                        str(p.get("listen") or ""), w)
                 for p, w in zip(pools, pool_weights(declared, pools)))


def parse_inputs(event: Any, facts: Mapping) -> Inputs:
    """The event profile (by the one schema the CLI also applies, event_profile.py) and the host
    facts the model needs."""
    try:
        profile = event_profile.parse_profile(event)
    except event_profile.ProfileError as exc:
        raise CapacityError(str(exc)) from None
    return Inputs(
        peak_qps=profile.peak_qps, concurrency=profile.concurrency,
        typical_s=profile.typical_ms / 1000, p99_s=profile.p99_ms / 1000,
        client_timeout_s=profile.client_timeout_s, p99_ms=profile.p99_ms, worker_mb=profile.php_worker_memory_mb,
        cpus=_cpus(facts), memory_mb=int(_number(facts, "memory_mb", "facts")),
        php_version=str(facts.get("php_version") or ""), host=str(facts.get("host") or ""),
        nofile_max=min(NR_OPEN, int(_number(facts, "nofile_max", "facts"))) if facts.get("nofile_max") else NR_OPEN,
        pools=_pools_in(facts, dict(profile.pools)), balancer=profile.balancer)


def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".")


def _check_override(key: str, value: Any) -> Any:
    """An override's type; Ansible -e values may arrive as text."""
    if key not in KEYS:
        raise CapacityError(f"unknown capacity key {_values.clip(key)} in {OVERRIDES_VAR}")
    if key == "php_fpm.pm":
        if value not in ("static", "dynamic"):
            raise CapacityError(f"{OVERRIDES_VAR}['php_fpm.pm']: expected 'static' or 'dynamic', "
                                f"got {_values.clip(value)}")
        return value
    if key == "nginx.worker_processes" and value == "auto":
        return value
    if key in TIMEOUT_KEYS:
        problem = _values.timeout_seconds(value, f"{OVERRIDES_VAR}[{key!r}]")
        if problem:
            raise CapacityError(problem)
        return seconds_of(millis(float(value)))
    problem = _values.whole_number(value, f"{OVERRIDES_VAR}[{key!r}]", 0, MAX_OVERRIDE)
    if problem:
        raise CapacityError(problem)
    return int(value)


class Plan:
    """The decisions so far; each key takes its override when one is given."""

    def __init__(self, overrides: Mapping[str, Any]) -> None:
        self.overrides = {k: _check_override(k, v) for k, v in overrides.items()}
        self.out: dict[str, dict[str, Any]] = {}

    def decide(self, key: str, value: Any, reason: str) -> Any:
        if key in self.overrides:
            given = self.overrides[key]
            self.out[key] = {"value": given, "reason": f"override (the model says {value}: {reason})"}
        else:
            self.out[key] = {"value": value, "reason": reason}
        return self.out[key]["value"]

    def __getitem__(self, key: str) -> Any:
        return self.out[key]["value"]


def _timeouts(p: Plan, i: Inputs) -> None:
    u = upstream_timeouts.derive(i.client_timeout_s, i.p99_ms)
    p99, client = ms_text(i.p99_ms), ms_text(u.client_ms)
    read = p.decide("nginx.upstream_read_timeout", seconds_of(u.read_ms),
                    f"{ms_text(u.read_ms)}: above p99 {p99}, below client timeout {client} so nginx, not the "
                    f"client, sees a sick backend ({u.read_why()})")
    read_ms = millis(read)
    p.decide("nginx.upstream_send_timeout", read,
             f"{ms_text(read_ms)} = upstream_read_timeout: sending a request never takes longer than answering it")
    connect = u.connect_ms(read_ms)
    p.decide("nginx.upstream_connect_timeout", seconds_of(connect),
             f"{ms_text(connect)}: a healthy php-fpm accepts in milliseconds; a full queue should fail over fast, "
             "not wait")
    terminate = ceil_seconds(read_ms)
    p.decide("php_fpm.request_terminate_timeout", terminate,
             f"{terminate} s = nginx.upstream_read_timeout" + (
                 ": work after nginx gave up is wasted" if terminate * 1000 == read_ms else
                 f" {ms_text(read_ms)} rounded up to whole seconds (php-fpm takes no less): nginx answers 504 "
                 "first, php-fpm kills the stuck worker within the second"))
    pct = ceil_seconds(u.client_ms)
    p.decide("php_fpm.process_control_timeout", pct,
             f"{pct} s = ceil(client timeout {client}) >= request_terminate_timeout: "
             "a graceful reload never cuts a legitimate request")
    slow = max(1, min(ceil_seconds(math.ceil(i.p99_ms)), terminate - 1))
    p.decide("php_fpm.request_slowlog_timeout", slow,
             f"{slow} s: anything slower than p99 {p99} is logged with its stack" + (
                 " before it is terminated" if slow < terminate else
                 " (php-fpm's shortest, the terminate's own second: the same check logs the stack, then terminates)"))


def _memory_for_php(i: Inputs) -> tuple[int, str]:
    reserve = max(OS_RESERVE_FLOOR_MB, math.ceil(0.15 * i.memory_mb)) + NGINX_WORKER_MB * i.cpus
    free = max(0, i.memory_mb - reserve)
    return free, (f"{free} MB = {i.memory_mb} MB - {reserve} MB kept for the OS (max(512 MB, 15%)) "
                  f"and {i.cpus} nginx workers x {NGINX_WORKER_MB} MB")


def _pool(p: Plan, i: Inputs) -> None:
    free, free_why = _memory_for_php(i)
    by_memory = int(free // i.worker_mb)
    needed = workers_needed(i.peak_qps, i.p99_s)
    prefix = "" if i.php_version else "(no php-fpm on this host, not applied) "
    if by_memory >= needed:
        children = needed
        reason = (f"{children} = peak {_fmt(i.peak_qps)} qps x p99 {_fmt(i.p99_s)} s (Little's law); "
                  f"memory allows {by_memory} ({free_why}, / {_fmt(i.worker_mb)} MB per worker)")
    else:
        children = max(by_memory, 1)
        reason = (f"{children} = memory: {free_why}, / {_fmt(i.worker_mb)} MB per worker; the declared peak "
                  f"needs {needed} (peak {_fmt(i.peak_qps)} qps x p99 {_fmt(i.p99_s)} s): this host CANNOT carry it, "
                  f"at most {_fmt(children / i.p99_s)} qps at p99")
    children = p.decide("php_fpm.pm_max_children", children, prefix + reason)
    pm = p.decide("php_fpm.pm", "static",
                  "static: every worker is forked before the spike (dynamic spawns gradually, too late for a flash sale)")
    p.decide("php_fpm.pm_start_servers", children,
             f"{children} = pm_max_children: all workers ready at the spike (used when pm = dynamic)")
    typical_busy = max(1, min(children, math.ceil(i.peak_qps * i.typical_s)))
    p.decide("php_fpm.pm_min_spare_servers", typical_busy,
             f"{typical_busy} = peak x typical {_fmt(i.typical_s)} s, the busy workers of a typical moment "
             "(used when pm = dynamic)")
    p.decide("php_fpm.pm_max_spare_servers", children,
             f"{children} = pm_max_children: idle workers are not killed during the event (used when pm = dynamic)")
    _max_requests(p, i, pm)


def workers_needed(peak_qps: float, p99_s: float) -> int:
    """php-fpm workers a host needs at its peak: peak x p99 (Little's law), at least 2."""
    return max(2, math.ceil(peak_qps * p99_s))


def _max_requests(p: Plan, i: Inputs, pm: str) -> None:
    if pm == "static":
        p.decide("php_fpm.pm_max_requests", 0,
                 "0: a static pool takes requests round-robin, so any limit recycles every worker at once "
                 "(F5 convoy); recycle with a graceful reload after the event")
        return
    offset = zlib.crc32(i.host.encode()) % MAX_REQUESTS_SPREAD
    value = MAX_REQUESTS_BASE + offset
    p.decide("php_fpm.pm_max_requests", value,
             f"{value} = {MAX_REQUESTS_BASE} + crc32({i.host!r}) mod {MAX_REQUESTS_SPREAD}: hosts recycle at "
             "different counts, never together")


def _room_s(read: float, i: Inputs) -> float:
    """How long a request may wait in php-fpm's queue and still be answered within nginx's read
    timeout: read - p99, in milliseconds (0.8 - 0.3 is 0.5000000000000001 in seconds)."""
    return (millis(read) - i.p99_ms) / 1000


def _queue_wait(p: Plan, i: Inputs) -> tuple[float, float]:
    """(acceptable queue wait, read timeout - p99): how long a request may wait for a worker and
    still be answered within the upstream timeout, at most MAX_QUEUE_WAIT_S."""
    room = _room_s(p["nginx.upstream_read_timeout"], i)
    return min(room, MAX_QUEUE_WAIT_S), room


def _php_backlog(p: Plan, i: Inputs) -> None:
    wait, room = _queue_wait(p, i)
    arrivals = math.ceil(i.peak_qps * wait)
    children = p["php_fpm.pm_max_children"]
    drain = math.ceil(children / i.typical_s * wait)
    backlog = max(1, min(arrivals, drain, SOMAXCONN_MAX))
    if backlog == SOMAXCONN_MAX:
        why = f"{backlog}: the kernel's largest useful accept queue ({arrivals} arrive in {_fmt(wait)} s)"
    elif backlog == arrivals:
        why = (f"{backlog} = {_fmt(i.peak_qps)} qps x {_fmt(wait)} s acceptable queue wait "
               f"(read timeout - p99 = {_fmt(room)} s, at most {_fmt(MAX_QUEUE_WAIT_S)} s); "
               f"the pool drains {drain} in that time")
    else:
        why = (f"{backlog} = what {children} workers drain in the {_fmt(wait)} s acceptable queue wait "
               f"({children} / {_fmt(i.typical_s)} s x {_fmt(wait)} s); {arrivals} arrive: the rest would be dead "
               "connections (F1)")
    p.decide("php_fpm.listen_backlog", backlog, why)


def _apportion(total: int, weights: list[int]) -> list[int]:
    """`total` split by weight, largest remainder first, at least one each."""
    whole = sum(weights)
    exact = [total * w / whole for w in weights]
    out = [max(1, math.floor(x)) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda k: (exact[k] - math.floor(exact[k]), weights[k]), reverse=True)
    for k in by_remainder[:max(0, total - sum(out))]:
        out[k] += 1
    return out


_SPLIT_KEYS = ("pm_max_children", "pm_max_spare_servers", "pm_start_servers", "pm_min_spare_servers")


def _split(p: Plan, i: Inputs) -> None:
    """Every running pool's share of the host's peak and workers (php_fpm.pools)."""
    if not i.pools:
        return
    weights = [pool.weight for pool in i.pools]
    whole = sum(weights)
    parts = {key: _apportion(p[f"php_fpm.{key}"], weights) for key in _SPLIT_KEYS}
    wait = _queue_wait(p, i)[0]
    pools, lines = {}, []
    for k, pool in enumerate(i.pools):
        share = pool.weight / whole
        qps = i.peak_qps * share
        values = {key: parts[key][k] for key in _SPLIT_KEYS}
        # Rounding each key alone may break php-fpm's order min <= start <= max <= children.
        values["pm_max_spare_servers"] = min(values["pm_max_spare_servers"], values["pm_max_children"])
        values["pm_start_servers"] = min(values["pm_start_servers"], values["pm_max_spare_servers"])
        values["pm_min_spare_servers"] = min(values["pm_min_spare_servers"], values["pm_start_servers"])
        children = values["pm_max_children"]
        if "php_fpm.listen_backlog" in p.overrides:
            backlog, why = p["php_fpm.listen_backlog"], "the override"
        else:
            backlog = max(1, min(math.ceil(qps * wait), math.ceil(children / i.typical_s * wait), SOMAXCONN_MAX))
            why = (f"min({_fmt(qps)} qps x {_fmt(wait)} s wait, what {children} workers drain in it "
                   f"({children} / {_fmt(i.typical_s)} s x {_fmt(wait)} s))")
        reason = (f"weight {pool.weight}/{whole} of {_fmt(i.peak_qps)} qps = {_fmt(qps)} qps: {children} of the "
                  f"host's {p['php_fpm.pm_max_children']} workers ({children * i.worker_mb:g} MB); "
                  f"listen.backlog {backlog} = {why}")
        pools[pool.label] = dict(values, name=pool.name, listen=pool.listen, weight=pool.weight,
                                 share=round(share, 4), peak_qps=round(qps, 3), listen_backlog=backlog, reason=reason)
        lines.append(f"{pool.label} {children} workers")
    total, free = p["php_fpm.pm_max_children"], _memory_for_php(i)[0]
    p.decide("php_fpm.pools", pools,
             f"{len(pools)} running pool(s) split the host's {total} workers ({total * i.worker_mb:g} MB of the "
             f"{free} MB left for php-fpm) and {_fmt(i.peak_qps)} qps by weight (opsctl_event.pools, by pool name or listen address; a pool "
             f"not named weighs 1): " + "; ".join(lines))


def _nginx(p: Plan, i: Inputs) -> None:
    p.decide("nginx.worker_processes", "auto", f"auto: one worker per CPU ({i.cpus} here)")
    workers = i.cpus if p["nginx.worker_processes"] == "auto" else max(1, int(p["nginx.worker_processes"]))
    conc, conc_why = ((i.concurrency, "declared concurrency") if i.concurrency
                      else (math.ceil(i.peak_qps * i.client_timeout_s), "peak qps x client timeout"))
    per_worker = math.ceil(2 * conc / workers)
    wanted = max(1024, math.ceil(per_worker / 1024) * 1024)
    wc = min(wanted, i.nofile_max // 2)
    capped = f"; capped at {wc}, half the {i.nofile_max} open files this host allows a process" if wc < wanted else ""
    wc = p.decide("nginx.worker_connections", wc,
                  f"{wanted} >= 2 x {conc} connections ({conc_why}; client + upstream) / {workers} workers, "
                  f"in steps of 1024, at least 1024{capped}")
    nofile = min(i.nofile_max, max(NOFILE_FLOOR, 2 * wc))
    capped = (f", capped at {i.nofile_max}: the most this host allows a process (fs.nr_open, or no "
              "CAP_SYS_RESOURCE in a container)") if nofile == i.nofile_max and nofile < NOFILE_FLOOR else ""
    nofile = p.decide("limits.nofile", nofile,
                      f"{nofile} = max({NOFILE_FLOOR}, 2 x worker_connections {wc}): a proxied request holds two "
                      f"descriptors{capped}")
    p.decide("nginx.worker_rlimit_nofile", nofile,
             f"{nofile} = limits.nofile, >= 2 x worker_connections {wc}")
    p.decide("php_fpm.rlimit_files", nofile, f"{nofile} = limits.nofile, so workers really get it")
    nginx_backlog = min(65535, max(NGINX_BACKLOG_FLOOR, math.ceil(i.peak_qps)))
    p.decide("nginx.listen_backlog", nginx_backlog,
             f"{nginx_backlog} = one second of new connections at peak ({_fmt(i.peak_qps)} qps), at least nginx's "
             f"{NGINX_BACKLOG_FLOOR}: nginx accepts fast, the queue only absorbs a burst")
    _nginx_upstream(p, i)


def _nginx_upstream(p: Plan, i: Inputs) -> None:
    read = p["nginx.upstream_read_timeout"]
    p.decide("nginx.upstream_max_fails", 3,
             "3: one slow request does not eject a healthy backend, a broken one is out within seconds")
    fail_timeout = max(10, ceil_seconds(2 * millis(read)))
    p.decide("nginx.upstream_fail_timeout", fail_timeout,
             f"{fail_timeout} s = max(10 s, 2 x read timeout): the window for max_fails and the time a failed backend rests")
    if i.php_version:
        limit = p["php_fpm.pm_max_children"] + p["php_fpm.listen_backlog"]
        why = (f"{limit} = pm_max_children + php listen_backlog: more concurrent requests cannot be served within "
               "the upstream timeout, so the excess gets a cheap 503 at once")
    else:
        limit = math.ceil(i.peak_qps * read)
        why = (f"{limit} = peak {_fmt(i.peak_qps)} qps x read timeout {_fmt(read)} s: the most requests in flight that "
               "can still be answered; the excess gets a cheap 503 at once")
    p.decide("nginx.limit_conn", limit, why)
    b = i.balancer
    if b is not None and b.layer == 7 and b.idle_timeout_s:
        keep = math.ceil(b.idle_timeout_s) + 5
        p.decide("nginx.keepalive_timeout", keep,
                 f"{keep} s = {b.name}'s idle timeout {_fmt(b.idle_timeout_s)} s + 5 s: the layer-7 balancer, not "
                 "nginx, closes an idle connection, so it never sends a request on one nginx has just closed (502)")
    else:
        p.decide("nginx.keepalive_timeout", 15,
                 "15 s (default 75 s): idle client connections do not hold worker_connections at peak")


def haproxy_ejection_ms(inter_ms: int, fastinter_ms: int, check_ms: int, fall: int) -> int:
    """How long HAProxy keeps sending requests to a backend that stopped answering, at worst: the
    next check starts within `inter`, each failing check lasts `timeout check`, and the checks of a
    server on its way down follow each other after `fastinter` (HAProxy schedules the next check
    when one ends). The one rule for harden's sizing and check's judgement."""
    return inter_ms + fall * check_ms + (fall - 1) * fastinter_ms


def _haproxy(p: Plan, i: Inputs) -> None:
    """An HAProxy balancer's timeouts and health checks, below the client's timeout (F2)."""
    client = millis(i.client_timeout_s)
    server = p.decide("haproxy.timeout_server_ms", millis(p["nginx.upstream_read_timeout"]),
                      f"{millis(p['nginx.upstream_read_timeout'])} ms = the upstream read timeout: above p99 "
                      f"{_fmt(i.p99_s)} s, below the client timeout, so HAProxy answers 504 before the client gives up")
    budget = client - server   # what the client waits beyond the server timeout: the queue and the attempts
    wait = _queue_wait(p, i)[0]
    queue = min(millis(wait), budget // 2)
    capped = "" if queue == millis(wait) else f", at most half the {budget} ms the client waits beyond the server timeout"
    queue = p.decide("haproxy.timeout_queue_ms", queue,
                     f"{queue} ms = the acceptable queue wait (read timeout - p99, at most "
                     f"{_fmt(MAX_QUEUE_WAIT_S)} s{capped}): a request waiting longer for a server slot (maxconn) gets a "
                     "cheap 503 at once instead of an answer after its client left")
    retries = HAPROXY_RETRIES if (budget - queue) // (HAPROXY_RETRIES + 1) >= 1 else 0
    retries = p.decide("haproxy.retries", retries,
                       f"{retries}: a refused or timed-out connection is tried again, the last time on "
                       "another server (option redispatch); nothing was sent, so it is safe for any request")
    connect = max(1, min(millis(p["nginx.upstream_connect_timeout"]), (budget - queue) // (retries + 1)))
    connect = connect // 10 * 10 if connect >= 10 else connect
    p.decide("haproxy.timeout_connect_ms", connect,
             f"{connect} ms = (client {client} - server {server} - queue {queue} ms) / {retries + 1} attempts, at most "
             f"the upstream connect timeout: every attempt and the answer fit in the client's wait")
    p.decide("haproxy.timeout_client_ms", client,
             f"{client} ms = the client timeout: a client silent longer than it waits itself is gone, its "
             "connection is freed")
    fall = p.decide("haproxy.check_fall", HAPROXY_FALL,
                    f"{HAPROXY_FALL}: one failed health check may be a blip, {HAPROXY_FALL} in a row take the server out")
    p.decide("haproxy.check_rise", HAPROXY_RISE,
             f"{HAPROXY_RISE}: a server comes back after {HAPROXY_RISE} good checks in a row")
    check = min(server, max(HAPROXY_CHECK_FLOOR_MS, millis(2 * i.p99_s)), max(10, client // (2 * fall)))
    check = p.decide("haproxy.timeout_check_ms", check,
                     f"{check} ms = max({HAPROXY_CHECK_FLOOR_MS} ms, 2 x p99), at most the server timeout and "
                     "client / (2 x fall): a host that cannot answer the health page in that time is sick")
    room = (client - fall * check) // (fall + 1)
    step = 100 if room >= 1000 else 10   # round figures, and still room for a sub-second client
    inter = max(HAPROXY_MIN_INTER_MS, min(HAPROXY_MAX_INTER_MS, room // step * step))
    inter = p.decide("haproxy.check_inter_ms", inter,
                     f"{inter} ms (also fastinter) = (client {client} - fall {fall} x check {check} ms) / {fall + 1}, "
                     f"in steps of {step} ms, at most HAProxy's default {HAPROXY_MAX_INTER_MS} ms: a backend that stops "
                     f"answering is DOWN within inter + fall x timeout check + (fall - 1) x fastinter = "
                     f"{haproxy_ejection_ms(inter, inter, check, fall)} ms, within the client timeout {client} ms")


def _sysctl(p: Plan, i: Inputs) -> None:
    biggest = max(p["php_fpm.listen_backlog"], p["nginx.listen_backlog"])
    somax = min(SOMAXCONN_MAX, max(SOMAXCONN_FLOOR, biggest))
    somax = p.decide("sysctl.net.core.somaxconn", somax,
                     f"{somax} = max({SOMAXCONN_FLOOR} (Linux default), largest listen backlog {biggest}), at most "
                     f"{SOMAXCONN_MAX}: "
                     "the kernel silently caps every backlog at it")
    syn = max(SOMAXCONN_FLOOR, somax)
    p.decide("sysctl.net.ipv4.tcp_max_syn_backlog", syn,
             f"{syn} = somaxconn: half-open connections of a burst are not dropped before they reach the accept queue")
    tw_need = math.ceil(i.peak_qps * 2 * TIME_WAIT_S)
    tw = max(TW_BUCKETS_FLOOR, tw_need)
    p.decide("sysctl.net.ipv4.tcp_max_tw_buckets", tw,
             f"{tw} = max({TW_BUCKETS_FLOOR}, peak {_fmt(i.peak_qps)} qps x 2 sockets x {TIME_WAIT_S} s TIME_WAIT = {tw_need})")
    p.decide("sysctl.net.ipv4.tcp_tw_reuse", 1,
             "1: nginx reuses TIME_WAIT ports for upstream connections (never tcp_tw_recycle: it breaks NAT clients)")
    packets = math.ceil(i.peak_qps * 10 * 0.1 / i.cpus)
    netdev = min(65536, max(SOMAXCONN_FLOOR, packets))
    p.decide("sysctl.net.core.netdev_max_backlog", netdev,
             f"{netdev} = max({SOMAXCONN_FLOOR}, 100 ms of packets per CPU at peak (~10 per request) = {packets})")
    fds = 2 * (i.concurrency or math.ceil(i.peak_qps * i.client_timeout_s)) + 64 * p["php_fpm.pm_max_children"]
    file_max = max(FILE_MAX_FLOOR, 2 * fds)
    p.decide("sysctl.fs.file-max", file_max,
             f"at least {file_max} = max({FILE_MAX_FLOOR}, 2 x {fds} descriptors expected at peak); a higher running "
             "value is kept")


Check = tuple[tuple[str, ...], Callable[[Callable[[str], Any], Inputs], str]]


def _inv_read(v: Callable[[str], Any], i: Inputs) -> str:
    read = v("nginx.upstream_read_timeout")
    if not i.p99_ms < millis(read) < millis(i.client_timeout_s):
        return f"needs p99 {_fmt(i.p99_s)} s < upstream_read_timeout {read} s < client timeout {_fmt(i.client_timeout_s)} s (F2)"
    return ""


def _inv_other_timeouts(v: Callable[[str], Any], i: Inputs) -> str:
    for key in ("nginx.upstream_connect_timeout", "nginx.upstream_send_timeout"):
        if not 0 < v(key) < i.client_timeout_s:
            return f"{key} {v(key)} s must be above 0 and below the client timeout {_fmt(i.client_timeout_s)} s (F2)"
    return ""


def _inv_terminate(v: Callable[[str], Any], i: Inputs) -> str:
    read = v("nginx.upstream_read_timeout")
    if v("php_fpm.request_terminate_timeout") != ceil_seconds(millis(read)):
        return (f"php_fpm.request_terminate_timeout {v('php_fpm.request_terminate_timeout')} s must be "
                f"nginx.upstream_read_timeout {read} s rounded up to whole seconds: nginx answers 504 first, and "
                "work after nginx gave up is wasted")
    return ""


def _inv_control(v: Callable[[str], Any], i: Inputs) -> str:
    pct, want = v("php_fpm.process_control_timeout"), ceil_seconds(millis(i.client_timeout_s))
    if pct != want or pct < v("php_fpm.request_terminate_timeout"):
        return (f"php_fpm.process_control_timeout {pct} s must be ceil(client timeout) = {want} s and >= "
                "request_terminate_timeout: a graceful reload would cut legitimate requests (F3)")
    return ""


def _inv_backlogs(v: Callable[[str], Any], i: Inputs) -> str:
    somax = v("sysctl.net.core.somaxconn")
    for key in ("php_fpm.listen_backlog", "nginx.listen_backlog"):
        if not 0 < v(key) <= somax:
            return f"{key} {v(key)} must be between 1 and net.core.somaxconn {somax}: the kernel caps it silently (F1)"
    return ""


def _inv_little(v: Callable[[str], Any], i: Inputs) -> str:
    wait = _room_s(v("nginx.upstream_read_timeout"), i)
    bound = math.ceil(i.peak_qps * max(wait, 0))
    if v("php_fpm.listen_backlog") > bound:
        return (f"php_fpm.listen_backlog {v('php_fpm.listen_backlog')} exceeds {bound} = peak {_fmt(i.peak_qps)} qps x "
                f"{_fmt(wait)} s acceptable wait: queued requests would outlive nginx's timeout (F1)")
    return ""


def _inv_nofile(v: Callable[[str], Any], i: Inputs) -> str:
    wc, rl = v("nginx.worker_connections"), v("nginx.worker_rlimit_nofile")
    if rl < 2 * wc:
        return f"nginx.worker_rlimit_nofile {rl} must be >= 2 x worker_connections {wc} (F6)"
    for key in ("limits.nofile", "nginx.worker_rlimit_nofile", "php_fpm.rlimit_files"):
        if not 1024 <= v(key) <= i.nofile_max:
            return (f"{key} {v(key)} must be between 1024 and {i.nofile_max}, the most this host allows a "
                    "process: the kernel refuses more")
    return ""


def _inv_memory(v: Callable[[str], Any], i: Inputs) -> str:
    free, free_why = _memory_for_php(i)
    children = v("php_fpm.pm_max_children")
    if children < 1 or (i.php_version and children * i.worker_mb > max(free, i.worker_mb)):
        return (f"php_fpm.pm_max_children {children} x {_fmt(i.worker_mb)} MB does not fit in {free_why}: "
                "the host would swap or kill workers")
    return ""


def _inv_spares(v: Callable[[str], Any], i: Inputs) -> str:
    if v("php_fpm.pm") != "dynamic":
        return ""
    order = [v(k) for k in ("php_fpm.pm_min_spare_servers", "php_fpm.pm_start_servers",
                            "php_fpm.pm_max_spare_servers", "php_fpm.pm_max_children")]
    if not 1 <= order[0] <= order[1] <= order[2] <= order[3]:
        return ("pm = dynamic needs 1 <= pm_min_spare_servers <= pm_start_servers <= pm_max_spare_servers <= "
                f"pm_max_children, got {order}: php-fpm refuses to start")
    return ""


def _inv_haproxy(v: Callable[[str], Any], i: Inputs) -> str:
    client = millis(i.client_timeout_s)
    spent = v("haproxy.timeout_queue_ms") + (v("haproxy.retries") + 1) * v("haproxy.timeout_connect_ms") \
        + v("haproxy.timeout_server_ms")
    if not millis(i.p99_s) < v("haproxy.timeout_server_ms") < client or spent > client:
        return (f"haproxy: p99 {millis(i.p99_s)} ms < timeout server {v('haproxy.timeout_server_ms')} ms and queue + "
                f"attempts x connect + server = {spent} ms must be below the client timeout {client} ms (F2)")
    down = haproxy_ejection_ms(v("haproxy.check_inter_ms"), v("haproxy.check_inter_ms"), v("haproxy.timeout_check_ms"),
                               v("haproxy.check_fall"))
    if down > client or min(v("haproxy.check_fall"), v("haproxy.check_rise"), v("haproxy.timeout_check_ms")) < 1:
        return (f"haproxy: a sick backend is DOWN after {down} ms (inter + fall x timeout check + (fall - 1) x "
                f"fastinter), later than the client timeout {client} ms (F2)")
    return ""


def _inv_tw_reuse(v: Callable[[str], Any], i: Inputs) -> str:
    return "" if v("sysctl.net.ipv4.tcp_tw_reuse") in (0, 1, 2) else "sysctl.net.ipv4.tcp_tw_reuse must be 0, 1 or 2"


INVARIANTS: list[Check] = [
    (("nginx.upstream_read_timeout",), _inv_read),
    (("nginx.upstream_connect_timeout", "nginx.upstream_send_timeout"), _inv_other_timeouts),
    (("php_fpm.request_terminate_timeout", "nginx.upstream_read_timeout"), _inv_terminate),
    (("php_fpm.process_control_timeout", "php_fpm.request_terminate_timeout", "nginx.upstream_read_timeout"),
     _inv_control),
    (("php_fpm.listen_backlog", "nginx.listen_backlog", "sysctl.net.core.somaxconn"), _inv_backlogs),
    (("php_fpm.listen_backlog", "nginx.upstream_read_timeout"), _inv_little),
    (("nginx.worker_rlimit_nofile", "nginx.worker_connections", "limits.nofile", "php_fpm.rlimit_files"),
     _inv_nofile),
    (("php_fpm.pm_max_children",), _inv_memory),
    (("php_fpm.pm", "php_fpm.pm_min_spare_servers", "php_fpm.pm_start_servers", "php_fpm.pm_max_spare_servers",
      "php_fpm.pm_max_children"), _inv_spares),
    (("sysctl.net.ipv4.tcp_tw_reuse",), _inv_tw_reuse),
    (("haproxy.timeout_server_ms", "haproxy.timeout_queue_ms", "haproxy.timeout_connect_ms", "haproxy.retries",
      "haproxy.check_inter_ms", "haproxy.timeout_check_ms", "haproxy.check_fall", "haproxy.check_rise"), _inv_haproxy),
]


def violations(plan: Mapping[str, Mapping[str, Any]], inputs: Inputs) -> list[tuple[tuple[str, ...], str]]:
    """Every invariant a finished plan breaks: (the keys involved, why)."""
    def value(key: str) -> Any:
        return plan[key]["value"]
    found = []
    for keys, check in INVARIANTS:
        why = check(value, inputs)
        if why:
            found.append((keys, why))
    return found


def derive(event: Mapping, facts: Mapping, overrides: Mapping | None = None,
           force: bool = False) -> dict[str, dict]:
    """Every capacity key for one host: {"value": ..., "reason": "..."}."""
    inputs = parse_inputs(event, facts)
    if overrides is not None and not isinstance(overrides, Mapping):
        raise CapacityError(f"opsctl_capacity_overrides: expected a mapping, got {type(overrides).__name__}")
    plan = Plan(overrides or {})
    for step in (_timeouts, _pool, _php_backlog, _split, _nginx, _haproxy, _sysctl):
        step(plan, inputs)
    where = f"{inputs.host}: " if inputs.host else ""
    for keys, why in violations(plan.out, inputs):
        blamed = [k for k in keys if k in plan.overrides]
        if force and blamed:
            plan.out[blamed[0]]["reason"] += f" [FORCED, breaks: {why}]"
            continue
        if blamed:
            raise CapacityError(f"{where}override {blamed[0]}={plan.overrides[blamed[0]]} refused: {why} "
                                "(set opsctl_capacity_force: true to apply it anyway)")
        raise CapacityError(f"{where}the capacity model cannot satisfy its own invariant: {why}")
    return {key: plan.out[key] for key in sorted(plan.out)}


def _clean_facts(facts: Mapping) -> dict[str, Any]:
    """The role's probed facts, which may arrive as text, as derive() takes them."""
    if not isinstance(facts, Mapping):
        raise CapacityError(f"facts: expected a mapping, got {type(facts).__name__}")
    return {"cpus": _whole(facts.get("cpus"), "cpus"), "memory_mb": _whole(facts.get("memory_mb"), "memory_mb"),
            "php_version": str(facts.get("php_version") or ""), "host": str(facts.get("host") or ""),
            "php_fpm_masters": facts.get("php_fpm_masters") if isinstance(facts.get("php_fpm_masters"), list) else [],
            "nofile_max": _whole(facts.get("nofile_max") or NR_OPEN, "nofile_max")}


def _filter_facts_error(facts: Any) -> str:
    """`opsctl_capacity_host | opsctl_capacity_facts_error`: "" or "HOST: why its facts are unusable",
    for a task that fails this host alone (not any_errors_fatal, unlike a refused input)."""
    host = facts.get("host", "this host") if isinstance(facts, Mapping) else "this host"
    problem = facts_problem(_clean_facts(facts) if isinstance(facts, Mapping) else facts)
    return f"{host}: {problem}" if problem else ""


def _filter_plan(event: Mapping, facts: Mapping, overrides: Mapping | None = None,
                 force: Any = False) -> dict[str, dict]:
    """`opsctl_event | opsctl_capacity_plan(facts, overrides, force)`; facts may arrive as text."""
    clean = _clean_facts(facts)
    # Ansible's own reading of a boolean ("on", "no", ...), as opsctl reads the inventory's; a
    # value that is no boolean at all was refused by the role's argument_specs already.
    from ansible.module_utils.parsing.convert_bool import boolean

    return derive(event, clean, overrides or {}, boolean(force, strict=False))


def _filter_error(event: Any, facts: Mapping, overrides: Mapping | None = None, force: Any = False) -> str:
    """The one-line reason the plan cannot be made, or "": lets a role fail cleanly, not with a trace."""
    if event is None:
        return f"{facts.get('host', 'this host')}: no opsctl_event declared for this host (see opsctl/profile.py)"
    try:
        _filter_plan(event, facts, overrides, force)
    except CapacityError as exc:
        return str(exc) if str(exc).startswith(f"{facts.get('host')}:") else f"{facts.get('host')}: {exc}"
    return ""


def _whole(value: Any, name: str) -> Any:
    """A fact as a number when Ansible handed it over as text ("4", "0.5"); else as given,
    for derive() to report. Long text is no figure (int() of 4300 digits raises)."""
    if not isinstance(value, str) or len(value) > 40:
        return value
    for kind in (int, float):
        try:
            return kind(value.strip())
        except ValueError:
            pass
    return value
