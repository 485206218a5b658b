"""A command balancer on the lab: the user's own disable / enable / sessions commands, run on
the balancer host, really take each web host out of the lab's nginx and put it back. The rolling
restart under order load loses nothing; a hung or failing command stops the rollout at that host
and step with one line, every other host serving."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from opsctl.lab.load import BackgroundLoad, Orders
from tests.conftest import opsctl
from tests.labtools import ssh

pytestmark = pytest.mark.lab

SITE = "/etc/nginx/sites-available/default"
# What a team writes for a balancer opsctl has no driver for: here the lab's nginx, driven by
# sed and a graceful reload, with ss counting the balancer's connections to the backend.
SERVER = r'^\s*server ${OPSCTL_ADDRESS}:${OPSCTL_PORT}[ ;]'
DISABLE = f'sed -i -E "/{SERVER}/{{/ down;/!s/;\\s*$/ down;/}}" {SITE} && nginx -t -q && nginx -s reload'
ENABLE = f'sed -i -E "/{SERVER}/s/ down;/;/" {SITE} && nginx -t -q && nginx -s reload'
SESSIONS = 'ss -Htn state established dst "$OPSCTL_ADDRESS:$OPSCTL_PORT" | wc -l'


def inventory(lab, tmp_path: Path, **commands: object) -> Path:
    """The lab's inventory with the web hosts behind a command balancer on lb1."""
    inv = tmp_path / "inventory"
    shutil.copytree(lab.inventory_dir, inv)
    web = inv / "group_vars" / "web.yml"
    data = yaml.safe_load(web.read_text())
    data["opsctl_balancers"] = [{"host": "lb1", "type": "command", "upstream": "opsctl_web", "disable": DISABLE,
                                 "enable": ENABLE, "sessions": SESSIONS, **commands}]
    web.write_text(yaml.safe_dump(data))
    return inv


def down(lab) -> set[str]:
    """The web hosts the lb's nginx has marked down."""
    text = ssh(lab, "lb1", f"cat {SITE}", check=True).stdout
    return {h.name for h in lab.by_role("web")
            if any(f"server {h.address}:" in line and " down" in line for line in text.splitlines())}


def reload(inv: Path, *args: str):
    return opsctl("reload", "php-fpm", "--rolling", "--inventory", str(inv), *args, timeout=300)


def test_a_command_balancer_drains_each_host_and_a_restart_under_load_loses_nothing(lab, tmp_path):
    inv = inventory(lab, tmp_path)
    plan = reload(inv, "--check")
    assert plan.returncode == 0 and "lb1 (command, upstream opsctl_web)" in plan.stdout + plan.stderr, plan.stdout + plan.stderr
    prefix = uuid.uuid4().hex[:8]
    lb = lab.by_role("lb")[0]
    with BackgroundLoad(lb.address, "/order.php?ms=100", seconds=240, concurrency=8, order_prefix=prefix) as load:
        proc = reload(inv, "--restart")
        load.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for host in lab.by_role("web"):
        assert f"{host.name} │ reloaded" in proc.stdout, proc.stdout
    assert down(lab) == set()
    ledgers = "".join(ssh(lab, h, "cat /var/lib/opsctl-lab/orders.log", check=True).stdout for h in lab.by_role("web"))
    orders = Orders.from_ledger(ledgers, prefix)
    print(f"\ncommand balancer restart under load: {load.result.sent} requests, {load.result.non_2xx} non-2xx, "
          f"{load.result.errors} errors; orders {orders}")
    assert load.result.sent > 20 and load.result.non_2xx == 0 and load.result.errors == 0, load.result
    assert orders.begun > 20 and orders.orphaned == 0, orders


def test_a_hung_disable_stops_the_rollout_at_the_first_host_and_changes_nothing(lab, tmp_path):
    inv = inventory(lab, tmp_path, disable="sleep 60", timeout=2)
    proc = reload(inv)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    reason = proc.stderr.strip().splitlines()[-1]
    assert "web1 failed at step drain: balancer lb1: disable command hung: stopped after 2 s" in reason, reason
    assert "(untouched: web2)" in reason and "Traceback" not in proc.stderr
    assert down(lab) == set()


def test_a_failing_enable_leaves_only_that_host_out_and_a_resume_puts_it_back(lab, tmp_path):
    broken = inventory(lab, tmp_path / "broken", enable="echo 'backend web1: permission denied' >&2; exit 5")
    proc = reload(broken)
    try:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        reason = proc.stderr.strip().splitlines()[-1]
        assert ("web1 failed at step enable: balancer lb1: enable command failed (exit 5): "
                "backend web1: permission denied") in reason, reason
        assert "web1 is left drained" in reason and "--resume-from web1" in reason
        assert down(lab) == {"web1"}          # the disable ran; every other host serves
    finally:
        resumed = reload(inventory(lab, tmp_path / "fixed"), "--resume-from", "web1")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert down(lab) == set()
