"""The lab is real: sshd, nginx and php-fpm answer; Ansible reaches every host over SSH with
host keys checked; down leaves nothing behind."""

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from opsctl.lab import system
from tests.labtools import ssh
from tests.conftest import opsctl

pytestmark = pytest.mark.lab


def test_status_shows_every_service_answering(lab):
    proc = opsctl("lab", "status", "--name", lab.name, "--format", "json", check=True)
    hosts = {h["name"]: h for h in json.loads(proc.stdout)}
    assert set(hosts) == {"lb1", "web1", "web2"}
    for h in hosts.values():
        assert h["running"] and h["sshd"] and h["nginx"], h
    assert hosts["web1"]["php_fpm"] and hosts["web2"]["php_fpm"]


def test_ansible_ping_over_ssh_with_checked_host_keys(lab):
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(lab.inventory_dir),
                           "all", "-m", "ansible.builtin.ping"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("SUCCESS") == 3


def test_a_wrong_host_key_is_refused(lab, tmp_path):
    web1 = next(h for h in lab.hosts if h.name == "web1")
    wrong = tmp_path / "known_hosts"
    other = next(h for h in lab.hosts if h.name == "web2")
    # web2's key recorded under web1's address: ssh must refuse to connect.
    key = next(line for line in lab.known_hosts.read_text().splitlines() if line.startswith(other.address + " "))
    wrong.write_text(key.replace(other.address, web1.address, 1) + "\n")
    proc = ssh(lab, web1, "true", known_hosts=str(wrong))
    assert proc.returncode != 0 and "HOST IDENTIFICATION HAS CHANGED" in proc.stderr


def test_each_host_has_its_own_filesystem_and_network(lab):
    web1, web2 = (next(h for h in lab.hosts if h.name == n) for n in ("web1", "web2"))
    assert ssh(lab, web1, "echo marker > /etc/opsctl-test-marker && sysctl -w net.core.somaxconn=777").returncode == 0
    assert ssh(lab, web2, "test -e /etc/opsctl-test-marker").returncode == 1
    assert ssh(lab, web2, "sysctl -n net.core.somaxconn").stdout.strip() != "777"
    assert not Path("/etc/opsctl-test-marker").exists()
    # The machine's global sysctls are out of reach of a lab host.
    assert ssh(lab, web1, "sysctl -w vm.swappiness=1").returncode != 0
    # The lab's private key is not visible from inside a host.
    assert ssh(lab, web1, f"test -e {lab.key_file}").returncode == 1


def test_the_balancer_spreads_over_both_web_hosts(lab):
    lb = next(h for h in lab.hosts if h.role == "lb")
    seen = set()
    for _ in range(6):
        with urllib.request.urlopen(f"http://{lb.address}/health.php", timeout=5) as response:
            seen.add(response.read().decode().split()[1])
    assert seen == {"web1", "web2"}


def test_order_endpoint_records_begin_and_commit(lab):
    web1 = next(h for h in lab.hosts if h.name == "web1")
    request = urllib.request.Request(f"http://{web1.address}/order.php?ms=10", data=b"id=t-order-1")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    log = ssh(lab, web1, "cat /var/lib/opsctl-lab/orders.log").stdout.splitlines()
    assert log[-2:] == ["begin t-order-1", "commit t-order-1"]


def test_work_endpoint_has_a_configurable_service_time(lab):
    import time
    web2 = next(h for h in lab.hosts if h.name == "web2")
    started = time.monotonic()
    with urllib.request.urlopen(f"http://{web2.address}/work.php?ms=300", timeout=5) as response:
        assert response.read().startswith(b"done 300ms web2")
    assert time.monotonic() - started >= 0.3


def test_up_again_is_safe_and_restarts_a_killed_sshd(lab):
    web2 = next(h for h in lab.hosts if h.name == "web2")
    ssh(lab, web2, "kill $(cat /run/sshd.pid)")
    proc = opsctl("lab", "status", "--name", lab.name)
    assert proc.returncode == 1
    opsctl("lab", "up", "--name", lab.name, check=True)
    assert ssh(lab, web2, "true").returncode == 0


def test_inventory_name_resolves_to_the_lab(lab):
    proc = opsctl("inventory", "--inventory", lab.name, "--format", "json", check=True)
    data = json.loads(proc.stdout)
    assert {h["name"]: h["address"] for h in data["hosts"]} == {h.name: h.address for h in lab.hosts}
    web = next(g for g in data["groups"] if g["name"] == "web")
    assert web["profile"]["request_time"] == {"typical_ms": 100, "p99_ms": 300}


def test_down_leaves_nothing_behind(lab_name):
    """Its own lab, so the session's lab stays up for the other tests; also crash-safe."""
    name = lab_name + "x"
    opsctl("lab", "up", "--name", name, "--web", "1", check=True)
    spec_root = Path(json.loads(Path(f"/var/lib/opsctl/labs/{name}/lab.json").read_text())["root"])
    # Simulate a crash: the state file is gone, the namespaces are not.
    (spec_root / "lab.json").unlink()
    opsctl("lab", "down", "--name", name, check=True)
    assert not [n for n in system.netns_list() if n.startswith(f"opsctl-{name}-")]
    assert not system.links_with_prefix(f"ov-{name}-") and not system.link_exists(f"olb-{name}")
    assert not system.mounts_below(spec_root) and not spec_root.exists()
    leftovers = subprocess.run(["pgrep", "-f", str(spec_root)], capture_output=True, text=True).stdout
    assert leftovers == ""
    # And twice is fine.
    opsctl("lab", "down", "--name", name, check=True)
