#!/usr/bin/env python3
"""How fast is `opsctl check` behind a bastion? For lab fleets of 20 and 50 hosts (the lb and the
web hosts behind `bastion1`, lab `bstb`; the same size reached directly, lab `dirb`), timed against

- the floor: one `ssh -J bastion host true` per host, all in parallel (the lab's ssh_config
  says ProxyJump: OpenSSH opens one connection to the bastion per host);
- opsctl check behind the bastion, and the SSH logins the bastion accepted from the controller
  during it (its sshd log: one connection for the whole fleet is the target);
- opsctl check of the same fleet reached directly (no bastion).

Every loop is bounded; only the lab's own addresses are contacted. Usage (root, from the checkout):

    .venv/bin/python bench/bastion_bench.py [--sizes 20,50] [--runs 3]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
OPSCTL = str(Path(PYTHON).parent / "opsctl")  # the installed entry point, as users run it
BEHIND, DIRECT = "bstb", "dirb"


def lab(name: str, *args: str) -> None:
    subprocess.run([PYTHON, "-m", "opsctl", "lab", *args, "--name", name], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)


def timed(argv: list[str], timeout: float = 600) -> tuple[float, int]:
    started = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout, cwd=REPO)
    return time.monotonic() - started, proc.returncode


def floor(spec) -> float:
    """Wall time of one `ssh host true` per host through the lab's ssh_config, all at once."""
    from opsctl.lab import remote

    started = time.monotonic()
    procs = [subprocess.Popen(remote.ssh_argv(spec, h, "true"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for h in spec.hosts if h.role != "bastion"]
    codes = [p.wait(timeout=120) for p in procs]
    if any(codes):
        print(f"  warning: {sum(1 for c in codes if c)} ssh failed", file=sys.stderr)
    return time.monotonic() - started


def logins(spec) -> int:
    log = spec.host_dir(spec.bastion) / "upper/var/log/opsctl-lab-sshd.log"
    return len(re.findall(rf"Accepted publickey for root from {re.escape(spec.gateway)} ", log.read_text()))


def best_check(name: str, runs: int) -> tuple[float, int]:
    timed([OPSCTL, "check", "--inventory", name, "--format", "json"])   # warm the inventory cache
    results = [timed([OPSCTL, "check", "--inventory", name, "--format", "json"]) for _ in range(runs)]
    return min(results)


def bench_size(hosts: int, runs: int) -> dict:
    from opsctl.lab import fleet

    for name, extra in ((BEHIND, ("--bastion",)), (DIRECT, ())):
        lab(name, "down")
        lab(name, "up", "--web", str(hosts - 1), *extra)
    behind = fleet.load_spec(BEHIND)
    ssh_floor = min(floor(behind) for _ in range(runs))
    before = logins(behind)
    check_behind, rc_behind = best_check(BEHIND, runs)
    per_check = (logins(behind) - before) / (runs + 1)
    check_direct, rc_direct = best_check(DIRECT, runs)
    return {"hosts": hosts, "floor": ssh_floor, "behind": check_behind, "rc": rc_behind, "logins": per_check,
            "direct": check_direct, "direct_rc": rc_direct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20,50", help="fleet sizes (lb + web hosts), comma separated")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measure (the best is shown)")
    args = parser.parse_args()
    rows = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"fleet of {size} hosts ...", file=sys.stderr, flush=True)
            rows.append(bench_size(size, max(1, min(args.runs, 5))))
    finally:
        for name in (BEHIND, DIRECT):
            lab(name, "down")
    print(f"{'hosts':>5} {'ssh -J floor':>13} {'check behind':>13} {'rc':>3} {'logins/check':>13} "
          f"{'check direct':>13} {'rc':>3} {'behind/floor':>13} {'behind/direct':>14}")
    for r in rows:
        print(f"{r['hosts']:>5} {r['floor']:>12.2f}s {r['behind']:>12.2f}s {r['rc']:>3} {r['logins']:>13.1f} "
              f"{r['direct']:>12.2f}s {r['direct_rc']:>3} {r['behind'] / r['floor']:>12.2f}x "
              f"{r['behind'] / r['direct']:>13.2f}x")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
