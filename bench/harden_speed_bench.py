#!/usr/bin/env python3
"""Issues 7 and 12 on the lab: how long the first and a converged (second) `opsctl harden` take
on 20 hosts, against the same playbook under plain `ansible-playbook` with Ansible's defaults.

Brings up (or reuses) the lab `hdcb` with 19 web hosts + 1 balancer, converges it once with
`opsctl harden` (timed and printed: the first pass, with the drained restarts of the hosts whose
listen.backlog changed), then times:
- opsctl:  `opsctl harden --inventory hdcb --no-restart` (ansible-runner, pipelining, one
           ControlPersist connection per host, forks = host count, an SSH probe first);
- ansible: `ansible-playbook -i INVENTORY playbooks/harden.yml` with an empty ansible.cfg
           (forks 5, no pipelining, Ansible's own SSH settings).
and prints both, the changed counts (both must be 0) and the ratio.

Usage: bench/harden_speed_bench.py [--lab hdcb] [--web 19] [--keep-lab] [--skip-ansible]. Needs root; touches
only the lab's own hosts. Every step has a time limit.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsctl.paths import collections_env  # noqa: E402
PYTHON = str(REPO / ".venv/bin/python")
LIMIT_S = 1800


def opsctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "opsctl", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=LIMIT_S)


def timed(func) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    proc = func()
    return time.monotonic() - started, proc


def ansible_defaults(inventory: Path) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as empty:
        config = Path(empty) / "ansible.cfg"
        config.write_text("[defaults]\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env["ANSIBLE_CONFIG"] = str(config)
        env.update(collections_env())
        return subprocess.run([str(REPO / ".venv/bin/ansible-playbook"), "-i", str(inventory),
                               "opsctl.fleet.harden"], capture_output=True, text=True,
                              cwd=empty, env=env, timeout=LIMIT_S)


def changed_total(text: str) -> int:
    return sum(int(n) for n in re.findall(r"changed=(\d+)", text))


def opsctl_changed(text: str) -> int:
    return sum(int(n) for n in re.findall(r"│ \S+\s+│ converged[^│]*│ \d+\s+│ (\d+)\s+│", text))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="hdcb")
    parser.add_argument("--web", type=int, default=19)
    parser.add_argument("--keep-lab", action="store_true")
    parser.add_argument("--skip-ansible", action="store_true",
                        help="time only opsctl's passes, not the same playbook under Ansible's defaults")
    args = parser.parse_args()
    up = opsctl("lab", "up", "--name", args.lab, "--web", str(args.web))
    if up.returncode != 0:
        print(up.stdout + up.stderr)
        return 1
    try:
        first_s, first = timed(lambda: opsctl("harden", "--inventory", args.lab))
        print(f"first run (converging, with drained restarts): {first_s:.1f} s, exit {first.returncode}")
        ours_s, ours = timed(lambda: opsctl("harden", "--inventory", args.lab, "--no-restart"))
        print(f"hosts: {args.web + 1}")
        print(f"opsctl harden (converged):            {ours_s:7.1f} s  exit {ours.returncode}  "
              f"changed {opsctl_changed(ours.stdout)}")
        if args.skip_ansible:
            return 0 if ours.returncode == 0 and opsctl_changed(ours.stdout) == 0 else 1
        inventory = Path("/var/lib/opsctl/labs") / args.lab / "inventory"
        plain_s, plain = timed(lambda: ansible_defaults(inventory))
        print(f"ansible-playbook, Ansible defaults:   {plain_s:7.1f} s  exit {plain.returncode}  "
              f"changed {changed_total(plain.stdout)}")
        print(f"speed-up: {plain_s / ours_s:.2f}x")
        if ours.returncode or plain.returncode:
            print((ours.stderr + plain.stdout)[-3000:])
        return 0 if ours.returncode == 0 and plain.returncode == 0 else 1
    finally:
        if not args.keep_lab:
            opsctl("lab", "down", "--name", args.lab)


if __name__ == "__main__":
    sys.exit(main())
