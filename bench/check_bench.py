#!/usr/bin/env python3
"""How fast is `opsctl check`? Lab fleets of 3, 20 and 50 hosts (lab `chkb`), each timed against

- the floor: one plain `ssh host true` per host, all in parallel;
- opsctl check (one paramiko connection and one probe round trip per host, catalog evaluated);
- Ansible reading the same facts: opsctl.fleet.preflight with forks = hosts.

Prints wall times, ratios and opsctl's peak memory (ru_maxrss of the child). Every loop is
bounded; only the lab's own addresses are contacted. Usage (root, from the checkout):

    .venv/bin/python bench/check_bench.py [--sizes 3,20,50] [--keep]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB = "chkb"
PYTHON = sys.executable
OPSCTL = str(Path(PYTHON).parent / "opsctl")  # the installed entry point, as users run it


def timed(argv: list[str], env: dict | None = None, timeout: float = 900) -> tuple[float, int, int]:
    """(wall seconds, exit code, peak RSS in MB) of one child process."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
                            env={**os.environ, **(env or {})})
    deadline = started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            return time.monotonic() - started, os.waitstatus_to_exitcode(status), usage.ru_maxrss // 1024
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return float("inf"), -9, 0
        time.sleep(0.01)


def ssh_floor(spec) -> float:
    """Wall time of one `ssh host true` per host, all at once."""
    from opsctl.lab import remote

    started = time.monotonic()
    procs = [subprocess.Popen(remote.ssh_argv(spec, h, "true"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for h in spec.hosts]
    codes = [p.wait(timeout=120) for p in procs]
    if any(codes):
        print(f"  warning: {sum(1 for c in codes if c)} ssh failed", file=sys.stderr)
    return time.monotonic() - started


def cpu_ticks() -> list[int]:
    """The all-CPU line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    return [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def busy_share(interval: float = 1.0) -> float:
    """Share of all CPUs busy over `interval` seconds."""
    before = cpu_ticks()
    time.sleep(interval)
    after = cpu_ticks()
    total = sum(after) - sum(before)
    idle = after[3] + after[4] - before[3] - before[4]  # idle + iowait
    return 1 - idle / max(total, 1)


def steal_s() -> float:
    """Seconds of CPU the hypervisor gave to other guests since boot ("steal")."""
    ticks = cpu_ticks()
    return ticks[7] / os.sysconf("SC_CLK_TCK") if len(ticks) > 7 else 0.0


def wait_quiet(limit_s: float = 60) -> None:
    """Wait (bounded) until the machine is idle: a lab that is still booting, or the last
    run's ssh masters winding down, would be timed along with opsctl."""
    deadline = time.monotonic() + limit_s
    while busy_share() > 0.10 and time.monotonic() < deadline:
        pass


def lab(*args: str) -> None:
    subprocess.run([PYTHON, "-m", "opsctl", "lab", *args, "--name", LAB], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)


def bench_size(hosts: int, runs: int) -> dict:
    from opsctl.lab import fleet

    lab("down")
    lab("up", "--web", str(hosts - 1))
    spec = fleet.load_spec(LAB)
    inventory = str(spec.inventory_dir)
    timed([OPSCTL, "check", "--inventory", inventory, "--format", "json"])  # warm caches
    wait_quiet()
    floor = min(ssh_floor(spec) for _ in range(runs))
    checks = []
    for _ in range(runs):
        wait_quiet()
        checks.append(timed([OPSCTL, "check", "--inventory", inventory, "--format", "json"]))
    best = min(checks, key=lambda c: c[0])
    wait_quiet()
    from opsctl.paths import collections_env

    ansible = timed([str(Path(PYTHON).parent / "ansible-playbook"), "-i", inventory,
                     "opsctl.fleet.preflight"], env={"ANSIBLE_FORKS": str(hosts), **collections_env()})
    median = sorted(c[0] for c in checks)[len(checks) // 2]
    return {"hosts": hosts, "floor": floor, "check": best[0], "median": median, "check_rc": best[1], "rss_mb": best[2],
            "ansible": ansible[0], "ansible_rc": ansible[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="3,20,50", help="fleet sizes (hosts incl. the lb), comma separated")
    parser.add_argument("--runs", type=int, default=3, help="opsctl check runs per size (best and median shown)")
    parser.add_argument("--keep", action="store_true", help="leave the last lab up")
    args = parser.parse_args()
    rows = []
    stolen_at_start = steal_s()
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            print(f"fleet of {size} hosts ...", file=sys.stderr, flush=True)
            rows.append(bench_size(size, max(1, min(args.runs, 5))))
    finally:
        if not args.keep:
            lab("down")
    print(f"{'hosts':>5} {'ssh floor':>10} {'opsctl check':>13} {'median':>7} {'rc':>3} {'peak RSS':>9} "
          f"{'ansible preflight':>18} {'rc':>3} {'ansible/opsctl':>15} {'opsctl/floor':>13}")
    for r in rows:
        print(f"{r['hosts']:>5} {r['floor']:>9.2f}s {r['check']:>12.2f}s {r['median']:>6.2f}s {r['check_rc']:>3} "
              f"{r['rss_mb']:>6} MB "
              f"{r['ansible']:>17.2f}s {r['ansible_rc']:>3} {r['ansible'] / r['check']:>14.1f}x "
              f"{r['check'] / r['floor']:>12.1f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; CPU time stolen by the "
          f"hypervisor during the run: {steal_s() - stolen_at_start:.1f} s (other work on the machine skews timings)")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
