#!/usr/bin/env python3
"""Issue 13 on the lab: the whole job on each host layout opsctl can build (`lab up --flavor`).

For each flavor, brings up its own lab (1 balancer, --web web hosts of that flavor) and prints:
findings before (fail / warn of `opsctl check`), whether harden succeeded, the tasks changed on a
second harden (opsctl's summary table), findings after, and a rolling php-fpm restart through
the balancer under load (GET work.php and POST order.php, bounded in time): requests sent,
non-2xx, connection errors, orders begun and orders cut half way (begun, never committed).

Usage: bench/flavor_bench.py [--flavor debian --flavor source] [--web 2] [--bastion] [--keep-lab].
--bastion puts each lab's hosts behind a bastion (`lab up --bastion`). Needs root; traffic goes
only to each lab's own balancer.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsctl.lab import fleet, remote  # noqa: E402
from opsctl.lab.load import BackgroundLoad, Orders  # noqa: E402
from opsctl.lab.spec import FLAVORS  # noqa: E402


@dataclass
class Figures:
    flavor: str
    before: tuple[int, int] = (0, 0)
    harden_rc: int = -1
    second_changed: int = -1
    after: tuple[int, int] = (0, 0)
    sent: int = 0
    non_2xx: int = 0
    errors: int = 0
    orders: Orders | None = None
    rollout_rc: int = -1


def opsctl(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opsctl", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def findings(name: str) -> tuple[int, int]:
    report = json.loads(opsctl("check", "--inventory", name, "--format", "json", timeout=300).stdout)
    statuses = [r["status"] for r in report["results"]]
    return statuses.count("fail"), statuses.count("warn")


def ledger(spec, host) -> str:
    return remote.run(spec, host, "cat /var/lib/opsctl-lab/orders.log").stdout


def rollout(spec, out: Figures) -> None:
    lb = spec.by_role("lb")[0]
    prefix = uuid.uuid4().hex[:8]
    with BackgroundLoad(lb.address, "/work.php?ms=100", seconds=300, concurrency=6) as gets, \
         BackgroundLoad(lb.address, "/order.php", seconds=300, concurrency=4, order_prefix=prefix) as posts:
        time.sleep(2)
        out.rollout_rc = opsctl("reload", "php-fpm", "--rolling", "--restart", "--inventory", spec.name).returncode
        time.sleep(2)
        gets.stop()
        posts.stop()
    time.sleep(1)
    out.sent = gets.result.sent + posts.result.sent
    out.non_2xx = gets.result.non_2xx + posts.result.non_2xx
    out.errors = gets.result.errors + posts.result.errors
    out.orders = Orders.from_ledger("\n".join(ledger(spec, h) for h in spec.by_role("web")), prefix)


def run_flavor(flavor: str, web: int, keep: bool, bastion: bool = False) -> Figures:
    name = f"fb{flavor[:5]}{'j' if bastion else ''}"
    out = Figures(flavor + ("+bastion" if bastion else ""))
    opsctl("lab", "down", "--name", name)
    up = opsctl("lab", "up", "--name", name, "--web", str(web), "--flavor", flavor, *(["--bastion"] if bastion else []))
    if up.returncode != 0:
        raise SystemExit(f"lab up --flavor {flavor} failed: {up.stderr.strip()}")
    spec = fleet.load_spec(name)
    try:
        out.before = findings(name)
        out.harden_rc = opsctl("harden", "--inventory", name).returncode
        second = opsctl("harden", "--inventory", name).stdout
        out.second_changed = sum(int(c) for c in re.findall(r"│ \w+\s+│ converged\s+│ \d+\s+│ (\d+)\s+│", second))
        out.after = findings(name)
        rollout(spec, out)
    finally:
        if not keep:
            opsctl("lab", "down", "--name", name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavor", action="append", choices=FLAVORS)
    parser.add_argument("--web", type=int, default=2)
    parser.add_argument("--bastion", action="store_true")
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    rows = [run_flavor(f, args.web, args.keep_lab, args.bastion) for f in (args.flavor or FLAVORS)]
    print(f"{'flavor':15} {'before f/w':>10} {'harden':>6} {'2nd chg':>7} {'after f/w':>9} {'rollout':>7} "
          f"{'sent':>6} {'non2xx':>6} {'errors':>6} {'orders':>6} {'cut':>4}")
    for r in rows:
        o = r.orders or Orders(0, 0, 0)
        print(f"{r.flavor:15} {'%d/%d' % r.before:>10} {r.harden_rc:>6} {r.second_changed:>7} {'%d/%d' % r.after:>9} "
              f"{r.rollout_rc:>7} {r.sent:>6} {r.non_2xx:>6} {r.errors:>6} {o.begun:>6} {o.orphaned:>4}")


if __name__ == "__main__":
    main()
