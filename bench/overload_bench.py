#!/usr/bin/env python3
"""F1 on the lab: an overload burst against Debian's stock nginx + php-fpm, then the same burst
after opsctl.fleet.harden (the opsctl_php_fpm and opsctl_nginx roles among others, sized by
the capacity model) has run.

Brings up its own fresh lab (1 balancer, 2 web hosts). For each configuration, in one run:
- a burst of --factor x the pool's capacity (default 10x) through the balancer, for --burst
  seconds: impatient clients (--client-timeout, default the declared 2 s) that retry at once, so attempts
  arrive at a constant rate however the server answers; each attempt is GET /work.php?ms=200;
- goodput: successful (200) answers per second during the burst, against the pool's capacity
  (workers x 1 / 0.2 s);
- right after the burst, per web host: connections still queued on the php-fpm listener
  (Recv-Q; every one belongs to a client that has given up, F1) and php-fpm's sockets in
  CLOSE_WAIT (dead connections it accepted and is serving); php-fpm listens on
  127.0.0.1:9000 for both runs, as in the seed, unless --listen unix;
- recovery: seconds from the end of the burst until 3 requests in a row succeed again
  (probes every 0.1 s, bounded by --window seconds).

The event profile used for both runs makes the model size the pool like Debian's stock one
(5 workers per host, 200 ms requests: 50 requests/s for the two hosts), so both runs have the
same capacity and only the settings differ. Traffic goes only to the lab's own balancer.

Usage: bench/overload_bench.py [--lab hdr] [--burst 20] [--factor 10] [--window 20] [--listen tcp|unix] [--keep-lab]
Needs root.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsctl.lab import fleet, remote  # noqa: E402
from opsctl.lab.load import Burst, attempt, fpm_on_tcp, impatient_burst  # noqa: E402
from opsctl.paths import collections_env  # noqa: E402

SERVICE_MS = 200
WORKERS_PER_HOST = 5          # Debian's stock pm.max_children, and what EVENT below sizes to
FPM_PORT = 9000
PATH = f"/work.php?ms={SERVICE_MS}"
# peak 20 qps x p99 0.25 s = 5 workers per host (Little's law), 200 ms typical: the model then
# derives a 1 s upstream timeout (client gives up at 2 s), listen.backlog 15 and limit_conn 20.
EVENT = {"name": "overload-bench", "peak_qps": 20, "concurrency": 200,
         "request_time": {"typical_ms": SERVICE_MS, "p99_ms": 250}, "client_timeout_s": 2,
         "php_worker_memory_mb": 32}


def ssh(spec, host, command: str) -> subprocess.CompletedProcess:
    return remote.run(spec, host, command, timeout=300)


def opsctl(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "opsctl", *args], check=True, cwd=REPO, capture_output=True, timeout=600)


async def recovery(address: str, window: float, timeout: float) -> float | None:
    """Seconds until 3 requests in a row succeed again, or None within the window."""
    start = time.monotonic()
    streak, first = 0, None
    while time.monotonic() - start < window:
        sent = time.monotonic()
        if await attempt(address, PATH, timeout) == 200:
            first = first if streak else sent - start
            streak += 1
            if streak == 3:
                return first
        else:
            streak = 0
        await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - sent)))
    return None


def queues(spec) -> list[tuple[str, int, int]]:
    """(host, connections queued on the php-fpm listener, its sockets in CLOSE_WAIT) per web host."""
    out = []
    for host in spec.by_role("web"):
        text = ssh(spec, host, f"ss -Hlx; ss -Hlnt; echo ===; ss -Htan state close-wait '( sport = :{FPM_PORT} )' | wc -l").stdout
        listeners, _, closewait = text.partition("===")
        queued = sum(int(line.split()[2 if "fpm.sock" in line else 1]) for line in listeners.splitlines()
                     if "fpm.sock" in line or f"127.0.0.1:{FPM_PORT}" in line)
        out.append((host.name, queued, int(closewait.strip() or 0)))
    return out


def listen_on_tcp(spec) -> None:
    """php-fpm on 127.0.0.1:FPM_PORT, as in the seed (F1 was measured there): a TCP listener
    shows the dead connections php-fpm accepted as CLOSE_WAIT; a unix socket has no such state."""
    for host in spec.by_role("web"):
        done = ssh(spec, host, f"{fpm_on_tcp(f'127.0.0.1:{FPM_PORT}')} && "
                               "/etc/init.d/php8.2-fpm stop >/dev/null && /etc/init.d/php8.2-fpm start >/dev/null && "
                               "nginx -s reload")
        if done.returncode != 0:
            sys.exit(f"{host.name}: could not move php-fpm to TCP: {done.stderr.strip()}")
    time.sleep(1)


def run_one(spec, label: str, factor: float, seconds: float, window: float, timeout: float) -> dict:
    lb = spec.by_role("lb")[0].address
    capacity = len(spec.by_role("web")) * WORKERS_PER_HOST * 1000 / SERVICE_MS
    result = impatient_burst(lb, PATH, rate=capacity * factor, seconds=seconds, timeout=timeout)
    queued = queues(spec)
    recovered = asyncio.run(recovery(lb, window, timeout))
    return {"label": label, "capacity": capacity, "burst": result, "queues": queued, "recovered": recovered}


def harden(spec) -> None:
    """opsctl.fleet.harden (kernel, limits, php-fpm, nginx, lifecycle, logrotate), sized by the
    model for EVENT; then a stop/start of php-fpm (QUIT, graceful) on each web host, since a
    reload cannot apply a new listen.backlog."""
    env = dict(os.environ, ANSIBLE_PIPELINING="1", **collections_env())
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(spec.inventory_dir),
                           "opsctl.fleet.harden",
                           "-e", json.dumps({"opsctl_event": EVENT})],
                          capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"hardening failed:\n{proc.stdout[-3000:]}")
    for host in spec.by_role("web"):
        ssh(spec, host, "/etc/init.d/php8.2-fpm stop >/dev/null && /etc/init.d/php8.2-fpm start >/dev/null")


def settings(spec) -> str:
    web = spec.by_role("web")[0]
    pool = ssh(spec, web, "grep -hE '^(pm|pm.max_children|listen.backlog|request_terminate_timeout) =' "
                          "/etc/php/8.2/fpm/pool.d/www.conf | tr '\\n' ' '").stdout.strip()
    sendq = ssh(spec, web, f"ss -Hlx | awk '/fpm.sock/ {{print $4}}'; ss -Hlnt | awk '$4 == \"127.0.0.1:{FPM_PORT}\" {{print $3}}'").stdout.strip()
    limit = ssh(spec, spec.by_role("lb")[0], "grep -h limit_conn /etc/nginx/snippets/opsctl-server.conf 2>/dev/null "
                                              "| head -n 1").stdout.strip()
    return f"{pool or 'Debian stock pool (pm = dynamic, max_children 5)'}; fpm Send-Q {sendq}; lb {limit or 'no limit_conn'}"


def report(run: dict, how: str) -> None:
    b: Burst = run["burst"]
    goodput = b.ok / b.seconds
    print(f"\n== {run['label']}: {how}")
    print(f"   burst {b.seconds:.1f} s, {b.attempts} attempts ({b.attempts / b.seconds:.0f}/s = "
          f"{b.attempts / b.seconds / run['capacity']:.1f}x the pool's {run['capacity']:.0f} req/s)")
    print(f"   goodput {goodput:.1f} req/s = {100 * goodput / run['capacity']:.0f}% of capacity "
          f"(ok {b.ok}, shed 503 {b.shed}, other non-200 {b.other}, client timeouts {b.timeouts}, errors {b.errors})")
    print(f"   goodput in the second half of the burst {b.late_goodput():.1f} req/s "
          f"= {100 * b.late_goodput() / run['capacity']:.0f}% of capacity")
    per_second = [0] * max(1, round(b.seconds))
    for t in b.ok_at:
        per_second[min(int(t), len(per_second) - 1)] += 1
    print(f"   successes in each second of the burst: {' '.join(map(str, per_second))}")
    for host, queued, closewait in run["queues"]:
        print(f"   {host}: {queued} connections queued on the php-fpm listener after the burst, {closewait} in CLOSE_WAIT")
    rec = run["recovered"]
    print(f"   recovered after {rec:.2f} s" if rec is not None else "   NOT recovered within the window")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="hdr")
    # 20 s, not a few: a sale's rush lasts minutes, and the stock pool's successes all come in the
    # first second, before its queue fills; a short burst mostly measures that second.
    parser.add_argument("--burst", type=float, default=20.0, help="seconds of overload (at most 30)")
    parser.add_argument("--factor", type=float, default=10.0, help="attempt rate as a multiple of capacity (at most 20)")
    parser.add_argument("--window", type=float, default=20.0, help="seconds to wait for recovery (at most 60)")
    parser.add_argument("--client-timeout", type=float, default=float(EVENT["client_timeout_s"]),
                        help="seconds before a client gives up (default: the declared client timeout)")
    parser.add_argument("--listen", choices=("tcp", "unix"), default="tcp",
                        help="php-fpm listener for both runs: tcp 127.0.0.1:9000 as in the seed (default), "
                             "or the lab's unix socket")
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    burst_s, factor, window = min(args.burst, 30), min(args.factor, 20), min(args.window, 60)

    opsctl("lab", "down", "--name", args.lab)
    opsctl("lab", "up", "--name", args.lab)
    spec = fleet.load_spec(args.lab)
    try:
        if args.listen == "tcp":
            listen_on_tcp(spec)
        stock_how = settings(spec)
        stock = run_one(spec, "stock", factor, burst_s, window, args.client_timeout)
        # The stock pool is still busy serving dead connections: the roles' reload waits for it.
        harden(spec)
        hard_how = settings(spec)
        hardened = run_one(spec, "hardened", factor, burst_s, window, args.client_timeout)
    finally:
        if not args.keep_lab:
            opsctl("lab", "down", "--name", args.lab)
    report(stock, stock_how)
    report(hardened, hard_how)
    s, h = stock["burst"], hardened["burst"]
    ratio = (h.ok / h.seconds) / max(s.ok / s.seconds, 1e-9)
    print(f"\ngoodput hardened / stock over the burst: {ratio:.1f}x" if s.ok else
          f"\ngoodput hardened / stock over the burst: stock served nothing ({h.ok} vs 0)")
    late = h.late_goodput() / s.late_goodput() if s.late_goodput() else float("inf")
    print(f"goodput hardened / stock in the second half: {late:.1f}x")


if __name__ == "__main__":
    main()
