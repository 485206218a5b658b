"""What the lab integration tests do on lab hosts: a command over SSH, a playbook run on its
own, and the play recap of that run. Host keys are always checked against the lab's known_hosts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from opsctl.paths import collections_env

REPO = Path(__file__).resolve().parent.parent


def _address(spec, host) -> str:
    name = host if isinstance(host, str) else host.name
    return next(h.address for h in spec.hosts if h.name == name)


def ssh(spec, host, command: str, *, timeout: float = 60, known_hosts: str | None = None,
        check: bool = False) -> subprocess.CompletedProcess:
    """Run a shell command inside a lab host (given as a LabHost or its name)."""
    proc = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={known_hosts or spec.known_hosts}",
         "-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no", "-o", "ConnectTimeout=5",
         "-i", str(spec.key_file), f"root@{_address(spec, host)}", command],
        capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{command}: {proc.stderr}"
    return proc


def playbook(spec, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """ansible-playbook on its own (as AWX would run it) against the lab's inventory, with the
    checkout's collection (`opsctl.fleet.harden` ...); pipelining on, as opsctl's runner and any
    tuned ansible.cfg have it."""
    env = dict(os.environ, ANSIBLE_PIPELINING="True", **collections_env())
    return subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(spec.inventory_dir),
                           *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


def recap(output: str) -> dict[str, dict[str, int]]:
    """PLAY RECAP counts per host: {"web1": {"ok": 12, "changed": 0, ...}}."""
    found = {}
    for host, counts in re.findall(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M):
        found[host] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", counts)}
    return found
