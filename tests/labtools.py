"""What the lab integration tests do on lab hosts: a command over SSH, a playbook run on its
own, and the play recap of that run. Host keys are always checked against the lab's known_hosts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Sequence

from opsctl.lab import remote
from opsctl.lab.load import BackgroundLoad, Orders

from opsctl.paths import collections_env

REPO = Path(__file__).resolve().parent.parent


def ssh(spec, host, command: str, *, timeout: float = 60, known_hosts: str | None = None,
        check: bool = False) -> subprocess.CompletedProcess:
    """Run a shell command inside a lab host (given as a LabHost or its name)."""
    proc = remote.run(spec, host, command, timeout=timeout, known_hosts=known_hosts)
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


def assert_converged(spec, proc: subprocess.CompletedProcess, hosts: Sequence[str] = ()) -> None:
    """An `opsctl harden` run that succeeded and changed nothing on any host of the lab (or on
    `hosts`, the ones it was limited to)."""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = re.findall(r"│ (\w+)\s+│ converged\s+│ \d+\s+│ (\d+)\s+│", proc.stdout)
    names = hosts or [h.name for h in spec.hosts if h.role != "bastion"]
    assert sorted(rows) == sorted((name, "0") for name in names), proc.stdout


def assert_flavor_converged(spec) -> None:
    """A second harden changes nothing on web1, whose layout is the flavor's: its web hosts are
    alike, and its lb is the stock one test_harden.py proves (a third of the run's time)."""
    again = subprocess.run([sys.executable, "-m", "opsctl", "harden", "--inventory", spec.name, "--limit", "web1"],
                           capture_output=True, text=True, timeout=1200)
    assert_converged(spec, again, ["web1"])


def restart_under_load(spec) -> None:
    """`opsctl reload php-fpm --rolling --restart` while the balancer takes order load: every
    request answered 2xx, no connection error, no order begun and never committed."""
    prefix = uuid.uuid4().hex[:8]
    lb = spec.by_role("lb")[0]
    with BackgroundLoad(lb.address, "/order.php?ms=100", seconds=240, concurrency=8, order_prefix=prefix) as load:
        time.sleep(1)
        rolled = subprocess.run([sys.executable, "-m", "opsctl", "reload", "php-fpm", "--rolling", "--restart",
                                 "--inventory", spec.name], capture_output=True, text=True, timeout=600)
        load.stop()
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    time.sleep(1)
    ledgers = "".join(ssh(spec, h, "cat /var/lib/opsctl-lab/orders.log", check=True).stdout for h in spec.by_role("web"))
    orders = Orders.from_ledger(ledgers, prefix)
    result = load.result
    assert result.sent > 20 and result.non_2xx == 0 and result.errors == 0, result
    assert orders.begun > 20 and orders.orphaned == 0, orders
