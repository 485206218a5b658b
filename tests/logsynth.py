"""A synthetic access log whose figures are known: opsctl_timing lines with seeded request
times, a burst of known size in one second, and the figures computed from the lines themselves
(sorted values, counted seconds) for the tests to compare `profile suggest` with. And synthetic
nginx error logs, php-fpm error and slow logs in a given local zone, with their events counted
from the generator's own values (error_logs), for `report`."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, tzinfo


@dataclass(frozen=True)
class Synthetic:
    lines: list[str]
    p50_ms: float
    p99_ms: float
    peak_1s: int
    peak_1m: int
    epochs: list[float]


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, -(-round(q * len(ordered) * 1000) // 1000)) - 1]


def line(epoch: float, rt: float, urt: float, status: int = 200) -> str:
    return timing_line(epoch, rt, status, upstream="unix:/run/php/php-fpm.sock", urt=f"{urt:.3f}", ustatus=str(status))


def local_time(epoch: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch))


def timing_line(epoch: float, rt: float, status: int, *, host: str = "shop.test", server: str = "_",
                upstream: str = "-", ustatus: str = "-", urt: str = "-") -> str:
    """One opsctl_timing line; the upstream fields as nginx writes them ("a, b : c" for retries)."""
    uct = uht = "-" if upstream == "-" else re.sub(r"[\d.]+", "0.000", urt)
    return (f'10.0.0.9 - - [{local_time(epoch)}] "GET /shop.php HTTP/1.1" {status} 512 "-" "synth" "-" '
            f'{epoch:.3f} {rt:.3f} "{host}" "{server}" "{upstream}" "{ustatus}" "{uct}" "{uht}" {urt}')


def synthetic(start: float, seed: int = 15, background: int = 3000, burst: int = 240) -> Synthetic:
    """BACKGROUND requests over an hour from START (whole minute), then BURST in one second
    at START + 1800.5: request times log-normal around 80 ms with a tail past a second."""
    rng = random.Random(seed)
    times = [start + rng.uniform(0, 3600) for _ in range(background)] + [start + 1800.5] * burst
    rts = [round(min(rng.lognormvariate(-2.5, 1.3), 30.0), 3) for _ in times]
    lines = [line(t, rt, max(rt - 0.001, 0)) for t, rt in sorted(zip(times, rts))]
    seconds = Counter(int(t) for t in times)
    minutes = Counter(int(t) // 60 for t in times)
    return Synthetic(lines, nearest_rank(rts, 0.5) * 1000, nearest_rank(rts, 0.99) * 1000,
                     max(seconds.values()), max(minutes.values()), sorted(times))


# --- error and slow logs ----------------------------------------------------------------------
# Their times have no zone: written here in the zone given, as the host's local time.

NGINX_MESSAGES = {   # kind -> (level, message as nginx writes it before `, client: ...`)
    "upstream_timed_out": ("error", "upstream timed out (110: Connection timed out) while reading response header "
                                    "from upstream"),
    "upstream_connect_failed": ("error", "connect() failed (111: Connection refused) while connecting to upstream"),
    "upstream_backlog_full": ("error", "connect() to {upstream} failed (11: Resource temporarily unavailable) while "
                                       "connecting to upstream"),
    "no_live_upstreams": ("error", "no live upstreams while connecting to upstream"),
    "upstream_closed": ("error", "upstream prematurely closed connection while reading response header from upstream"),
    "upstream_disabled": ("warn", "upstream server temporarily disabled while connecting to upstream"),
    "worker_connections": ("alert", "{upstream} are not enough while connecting to upstream"),
    "open_files": ("crit", "socket() failed (24: Too many open files) while connecting to upstream"),
    "shed": ("error", "limiting connections by zone \"opsctl_shed\""),
}
LIMIT_SUBJECTS = {"worker_connections": "768 worker_connections", "open_files": "file descriptors",
                  "shed": "zone opsctl_shed"}


def _local(epoch: float, zone: tzinfo, layout: str) -> str:
    return datetime.fromtimestamp(epoch, zone).strftime(layout)


def nginx_error(epoch: float, zone: tzinfo, kind: str, upstream: str, server: str = "_", host: str = "shop.test") -> str:
    """One error-log line of an upstream failure; UPSTREAM as the event names it (10.0.0.3:80,
    unix:/run/php.sock, an upstream group's name)."""
    level, message = NGINX_MESSAGES[kind]
    message = message.format(upstream=upstream)
    peer = "10.213.5.3:80" if kind in LIMIT_SUBJECTS else upstream
    url = f"fastcgi://{peer}:" if peer.startswith("unix:") else f"http://{peer}/shop.php?id=7"
    return (f"{_local(epoch, zone, '%Y/%m/%d %H:%M:%S')} [{level}] 812#812: *{int(epoch) % 9973} {message}, "
            f'client: 10.0.0.9, server: {server}, request: "GET /shop.php?id=7 HTTP/1.1", upstream: "{url}", '
            f'host: "{host}"')


def fpm_error(epoch: float, zone: tzinfo, kind: str, pool: str, detail: str) -> str:
    """One php-fpm error-log line: max_children (DETAIL: the setting), slow_warning or terminated
    (DETAIL: the script)."""
    text = {"max_children": f"WARNING: [pool {pool}] server reached pm.max_children setting ({detail}), consider "
                            "raising it",
            "slow_warning": f"WARNING: [pool {pool}] child 4242, script '{detail}' (request: \"GET /slow.php?a=1\") "
                            "executing too slow (1.012345 sec), logging",
            "terminated": f"WARNING: [pool {pool}] child 4242, script '{detail}' (request: \"GET /slow.php?a=1\") "
                          "execution timed out (60.123456 sec), terminating"}[kind]
    return f"[{_local(epoch, zone, '%d-%b-%Y %H:%M:%S')}] {text}"


def slow_entry(epoch: float, zone: tzinfo, pool: str, script: str) -> list[str]:
    """One slow-log trace: its blank line, head, script and two frames."""
    return ["", f"[{_local(epoch, zone, '%d-%b-%Y %H:%M:%S')}]  [pool {pool}] pid 4242",
            f"script_filename = {script}", f"[0x00007f3c1a213e40] usleep() {script}:4",
            f"[0x00007f3c1a213d10] main() {script}:9"]


@dataclass(frozen=True)
class ErrorLogs:
    nginx: list[str]
    fpm: list[str]
    slow: list[str]
    # (minute epoch, kind, subject, detail) -> count: what the report must show
    expected: Counter
    unreadable: int


def error_logs(start: float, zone: tzinfo, seed: int = 15, minutes: int = 5) -> ErrorLogs:
    """Events over MINUTES minutes from START (UTC epoch), counted from the generator's own values:
    nginx upstream failures on two upstreams and a unix socket, two vhosts (one through the
    catch-all server, named by its Host); php-fpm max_children, slow and terminated warnings
    and slow-log traces for two pools; lines of no event (read, not counted) and junk (unreadable)."""
    rng = random.Random(seed)
    expected: Counter = Counter()
    nginx: list[tuple[float, str]] = []
    fpm: list[tuple[float, str]] = []
    slow: list[tuple[float, list[str]]] = []
    for _ in range(60 * minutes):
        epoch = start + rng.uniform(0, 60 * minutes)
        minute = int(epoch) // 60 * 60
        which = rng.random()
        if which < 0.5:
            kind = rng.choice(list(NGINX_MESSAGES))
            upstream = {"no_live_upstreams": "backend", "upstream_backlog_full": "unix:/run/php/php8.2-fpm.sock",
                        **LIMIT_SUBJECTS}.get(kind) or rng.choice(("10.213.5.3:80", "10.213.5.4:80", "unix:/run/php/php8.2-fpm.sock"))
            vhost, server = rng.choice(("shop.test", "api.test")), rng.choice(("named", "_"))
            nginx.append((epoch, nginx_error(epoch, zone, kind, upstream, vhost if server == "named" else "_", vhost)))
            expected[minute, kind, upstream, vhost] += 1
        elif which < 0.8:
            kind, pool = rng.choice(("max_children", "slow_warning", "terminated")), rng.choice(("www", "api"))
            detail = {"www": "5", "api": "12"}[pool] if kind == "max_children" else rng.choice(
                ("/var/www/slow.php", "/var/www/order.php"))
            fpm.append((epoch, fpm_error(epoch, zone, kind, pool, detail)))
            expected[minute, kind, pool, detail] += 1
        else:
            pool, script = rng.choice(("www", "api")), rng.choice(("/var/www/slow.php", "/var/www/order.php"))
            slow.append((epoch, slow_entry(epoch, zone, pool, script)))
            expected[minute, "slowlog", pool, script] += 1
    noise_at = start + 30
    nginx.append((noise_at, f"{_local(noise_at, zone, '%Y/%m/%d %H:%M:%S')} [notice] 811#811: signal process started"))
    fpm.append((noise_at, f"[{_local(noise_at, zone, '%d-%b-%Y %H:%M:%S')}] NOTICE: fpm is running, pid 811"))
    junk = ["this is no log line", "2026/13/45 99:99:99 [error] 1#1: *1 upstream timed out (110) while x"]
    return ErrorLogs([t for _e, t in sorted(nginx)] + junk, [t for _e, t in sorted(fpm)] + junk[:1],
                     [line for _e, entry in sorted(slow) for line in entry] + junk[:1], expected, 4)
