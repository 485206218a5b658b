#!/usr/bin/env python3
"""Issue 3 on the lab: F3's table, stock php-fpm lifecycle against opsctl_lifecycle, in one run.

Brings up its own lab (stock Debian php-fpm 8.2 and nginx on one web host). For each action,
20 clients POST orders straight to the web host's nginx for ~6 s (each order appends `begin`,
waits 300 ms, appends `commit`), the action runs at second 2; then the host's order ledger
says how many orders were begun, committed and orphaned (begun, never committed: cut half way).
- stock restart:  `/etc/init.d/php8.2-fpm restart` (Debian: QUIT, TERM after 30 s; process_control_timeout 0)
- stock reload:   `/etc/init.d/php8.2-fpm reload` (USR2, process_control_timeout 0)
then `playbooks/lifecycle.yml` runs on the host (a nightly cron restart planted beforehand), and:
- managed reload, managed restart, and the nightly cron job's command as the role rewrote it.

Usage: bench/lifecycle_bench.py [--lab lcy] [--keep-lab]. Needs root; traffic goes only to the
lab's own web host. Every load is bounded (6 s, 100000 requests).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsctl.lab import fleet, remote  # noqa: E402
from opsctl.paths import collections_env  # noqa: E402
from opsctl.lab.load import BackgroundLoad, LoadResult, Orders  # noqa: E402

INIT = "/etc/init.d/php8.2-fpm"
CRON = "/etc/cron.d/nightly-restart"
PLANTED = "28 5 * * * root /etc/init.d/php8.2-fpm restart >/dev/null 2>&1\n"


@dataclass(frozen=True)
class Row:
    action: str
    load: LoadResult
    orders: Orders
    took_s: float
    rc: int


def ssh(spec, host, command: str) -> subprocess.CompletedProcess:
    return remote.run(spec, host, command, timeout=120)


def under_load(spec, host, name: str, command: str) -> Row:
    prefix = uuid.uuid4().hex[:8]
    with BackgroundLoad(host.address, "/order.php", seconds=6, concurrency=20, order_prefix=prefix) as load:
        time.sleep(2)
        started = time.monotonic()
        proc = ssh(spec, host, command)
        took = time.monotonic() - started
    time.sleep(1)  # orders still in php-fpm when the clients stopped
    ledger = ssh(spec, host, "cat /var/lib/opsctl-lab/orders.log").stdout
    return Row(name, load.result, Orders.from_ledger(ledger, prefix), took, proc.returncode)


def apply_role(spec, host) -> None:
    env = dict(os.environ, ANSIBLE_PIPELINING="True", **collections_env())
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(spec.inventory_dir),
                           "--limit", host.name, "opsctl.fleet.lifecycle"],
                          capture_output=True, text=True, timeout=600, env=env)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr)


def rewritten_cron_command(spec, host) -> str:
    line = next(l for l in ssh(spec, host, f"cat {CRON}").stdout.splitlines() if l.startswith("28 5"))
    return line.split(None, 6)[6]  # after the 5 time fields and the user


def print_row(row: Row) -> None:
    r, o = row.load, row.orders
    print(f"{row.action:<44} {r.non_2xx:>6} of {r.sent:<5} {r.errors:>5} {o.begun:>6} {o.committed:>9} "
          f"{o.orphaned:>8} {row.took_s:>7.1f} {row.rc:>3}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="lcy")
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    quiet = lambda msg: None  # noqa: E731
    fleet.down(args.lab, report=quiet)  # a fresh lab: stock scripts, process_control_timeout 0
    spec = fleet.up(args.lab, 1, None, report=quiet)
    web = spec.by_role("web")[0]
    try:
        print(f"lab {spec.name}, {web.name} ({web.address}): 20 clients POST /order.php (300 ms) for 6 s, action at 2 s")
        print(f"{'action':<44} {'non-2xx':>14} {'conn':>5} {'begun':>6} {'committed':>9} {'orphaned':>8} "
              f"{'took s':>7} {'rc':>3}")
        print_row(under_load(spec, web, "stock init script restart (pct 0)", f"{INIT} restart"))
        print_row(under_load(spec, web, "stock reload, USR2 (pct 0)", f"{INIT} reload"))
        ssh(spec, web, f"printf %s {shlex.quote(PLANTED)} > {CRON}")
        started = time.monotonic()
        apply_role(spec, web)
        print(f"-- playbooks/lifecycle.yml applied in {time.monotonic() - started:.0f} s "
              "(process_control_timeout = ceil(client_timeout_s) = 5 s)")
        cron = rewritten_cron_command(spec, web)
        print_row(under_load(spec, web, "managed init script reload", f"{INIT} reload"))
        print_row(under_load(spec, web, "managed init script restart", f"{INIT} restart"))
        print_row(under_load(spec, web, "nightly cron job, as the role rewrote it", cron))
        print(f"   (cron runs: {cron})")
    finally:
        if not args.keep_lab:
            fleet.down(args.lab, report=quiet)


if __name__ == "__main__":
    main()
