#!/usr/bin/env python3
"""Issue 4 on the lab: a rolling php-fpm reload under load, against a naive fleet-wide restart.

Brings up its own lab (1 balancer, --web web hosts). For each method, in one run, sends a
load through the balancer (GET work.php and POST order.php, bounded in time) while the method
runs, and prints requests sent, non-2xx, connection errors, orphaned orders (begun, never
committed) and the total time, plus the rollout's per-host step times:
- rolling: `opsctl reload php-fpm --rolling` (test, drain, reload, smoke, enable per host);
- naive:   `/etc/init.d/phpX.Y-fpm restart` on every web host at once (the nightly cron of F3).

Usage: bench/rolling_bench.py [--lab NAME] [--web 3] [--keep-lab]. Needs root; traffic goes
only to the lab's own balancer.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsctl.lab import fleet, remote  # noqa: E402
from opsctl.lab.load import BackgroundLoad, Orders  # noqa: E402


def ssh(spec, host, command: str) -> subprocess.CompletedProcess:
    return remote.run(spec, host, command, timeout=300)


def orders(spec, prefix: str) -> Orders:
    ledgers = [ssh(spec, h, "cat /var/lib/opsctl-lab/orders.log").stdout for h in spec.by_role("web")]
    return Orders.from_ledger("\n".join(ledgers), prefix)


def under_load(spec, action) -> tuple[dict, float, object]:
    lb = spec.by_role("lb")[0]
    prefix = uuid.uuid4().hex[:8]
    with BackgroundLoad(lb.address, "/work.php?ms=100", seconds=300, concurrency=6) as gets, \
         BackgroundLoad(lb.address, "/order.php", seconds=300, concurrency=4, order_prefix=prefix) as posts:
        time.sleep(2)
        started = time.monotonic()
        outcome = action()
        took = time.monotonic() - started
        time.sleep(2)
        gets.stop()
        posts.stop()
    time.sleep(1)
    g, p = gets.result, posts.result
    figures = {"sent": g.sent + p.sent, "non_2xx": g.non_2xx + p.non_2xx, "errors": g.errors + p.errors,
               "orders": orders(spec, prefix)}
    return figures, took, outcome


def rolling(spec):
    proc = subprocess.run([sys.executable, "-m", "opsctl", "reload", "php-fpm", "--rolling",
                           "--inventory", spec.name], capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)
    return proc.stdout


def naive(spec):
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda h: ssh(spec, h, "/etc/init.d/php*-fpm restart"), spec.by_role("web")))


def step_rows(summary: str) -> list[str]:
    """The per-host rows of opsctl's summary table: host, result, seconds, per-step seconds."""
    return [re.sub(r"\s*│\s*", "  ", line).strip() for line in summary.splitlines()
            if line.startswith("│ web")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="rrbench")
    parser.add_argument("--web", type=int, default=3)
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    spec = fleet.up(args.lab, args.web, None, report=lambda msg: None)
    try:
        print(f"lab {spec.name}: 1 balancer, {args.web} web hosts; load through the balancer: "
              "6 clients GET work.php (100 ms) + 4 clients POST order.php (300 ms)")
        print(f"{'method':<10} {'sent':>6} {'non-2xx':>8} {'conn err':>9} {'begun':>6} {'committed':>10} "
              f"{'orphaned':>9} {'time s':>7}")
        for name, action in (("rolling", lambda: rolling(spec)), ("naive", lambda: naive(spec))):
            figures, took, outcome = under_load(spec, action)
            o = figures["orders"]
            print(f"{name:<10} {figures['sent']:6d} {figures['non_2xx']:8d} {figures['errors']:9d} "
                  f"{o.begun:6d} {o.committed:10d} {o.orphaned:9d} {took:7.1f}", flush=True)
            if name == "rolling":
                rows = step_rows(outcome)
        print("rolling reload per host (host, result, seconds, test, drain, reload, smoke, enable):")
        for row in rows:
            print("  " + row)
    finally:
        if not args.keep_lab:
            fleet.down(args.lab, report=lambda msg: None)


if __name__ == "__main__":
    main()
