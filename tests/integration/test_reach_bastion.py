"""Hosts behind a bastion (`opsctl lab up --bastion`): the lb and web hosts' sshd listens only on
a management network the controller has no route to; the lab's inventory reaches them as a user
would write it, through an ssh_config with ProxyJump (-F in ansible_ssh_common_args), and web1 as
a non-root user whose sudo needs a password (ansible_become_password). Everything opsctl and
Ansible do must go through the bastion, check over one connection to it, and no password may
appear in any output, artifact or cache. (harden, its convergence and a rolling restart under
load behind a bastion: test_flavor_source.py, whose lab is behind one too.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import fresh_lab, opsctl

pytestmark = pytest.mark.lab

OUTPUTS: list[str] = []     # every opsctl output of this module, grepped for passwords at the end


@pytest.fixture(scope="module")
def behind(lab_name: str):
    lab = fresh_lab(f"{lab_name}bj"[:8], 2, "debian", "--bastion")
    started = time.time()
    spec = next(lab)
    yield spec, started
    next(lab, None)   # lab down


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = opsctl(*args, timeout=timeout)
    OUTPUTS.extend((proc.stdout, proc.stderr))
    return proc


def check(inventory: str) -> tuple[int, dict]:
    proc = run("check", "--inventory", inventory, "--format", "json", timeout=180)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def errors(report: dict) -> dict[str, str]:
    return {h["host"]: h["error"] for h in report["hosts"]}


def accepted_at_bastion(spec) -> int:
    """The SSH logins the bastion's sshd accepted from the controller so far."""
    log = spec.host_dir(spec.bastion) / "upper/var/log/opsctl-lab-sshd.log"
    return len(re.findall(rf"Accepted publickey for root from {re.escape(spec.gateway)} ", log.read_text()))


def inventory_copy(spec, tmp_path: Path, *, known_hosts: str = "", become_password: str | None = None) -> str:
    """The lab's inventory as a user might have it instead: another known_hosts file (through its
    own ssh_config), another become password for web1, or none."""
    inv = tmp_path / "inventory"
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(spec.inventory_dir, inv)
    if known_hosts:
        config = tmp_path / "ssh_config"
        config.write_text(spec.ssh_config.read_text().replace(str(spec.known_hosts), known_hosts))
        hosts = inv / "hosts.yml"
        hosts.write_text(hosts.read_text().replace(f"-F {spec.ssh_config}", f"-F {config}"))
    web1 = inv / "host_vars/web1.yml"
    data = yaml.safe_load(web1.read_text())
    if become_password is None:
        data.pop("ansible_become_password")
    elif become_password:
        data["ansible_become_password"] = become_password
    web1.write_text(yaml.safe_dump(data))
    return str(inv)


def known_hosts_with_new_key(spec, tmp_path: Path, host: str) -> str:
    """The lab's known_hosts with HOST's recorded key replaced by another key (a rebuilt host,
    or someone in the middle)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = " ".join((tmp_path / "other.pub").read_text().split()[:2])
    address = next(h.reach for h in spec.hosts if h.name == host)
    lines = [f"{address} {other}" if line.split()[0] == address else line
             for line in spec.known_hosts.read_text().splitlines()]
    path = tmp_path / "known_hosts"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_the_hosts_are_reached_only_through_the_bastion(behind):
    spec, _ = behind
    for host in spec.by_role("web") + spec.by_role("lb"):
        for address in (host.ssh_address, host.address):   # no route; nothing listens for SSH
            direct = subprocess.run(["ssh", "-i", str(spec.key_file), "-o", f"UserKnownHostsFile={spec.known_hosts}",
                                     "-o", "BatchMode=yes", "-o", "ConnectTimeout=3", f"root@{address}", "true"],
                                    capture_output=True, text=True, timeout=30)
            assert direct.returncode == 255 and ("No route to host" in direct.stderr or "refused" in direct.stderr), \
                direct.stderr
    ping = subprocess.run([str(Path(sys.executable).parent / "ansible"), "-i", str(spec.inventory_dir), "all",
                           "-m", "ansible.builtin.ping"], capture_output=True, text=True, timeout=120)
    assert ping.returncode == 0 and ping.stdout.count("SUCCESS") == 3, ping.stdout + ping.stderr


def test_check_reaches_every_host_over_one_connection_to_the_bastion(behind):
    spec, _ = behind
    before = accepted_at_bastion(spec)
    rc, report = check(spec.name)
    assert errors(report) == {"lb1": "", "web1": "", "web2": ""}, report["hosts"]
    assert accepted_at_bastion(spec) - before == 1
    # web1's probe ran as root through deploy's sudo: it read what only root can (the masters'
    # /proc/PID/exe and their configuration through them).
    readable = {r["host"]: r["status"] for r in report["results"] if r["check"] == "config-readable"}
    assert readable == {"lb1": "pass", "web1": "pass", "web2": "pass"}, readable


def test_a_wrong_or_missing_become_password_is_that_hosts_error(behind, tmp_path):
    spec, _ = behind
    wrong = "wrong-" + os.urandom(6).hex()
    _, report = check(inventory_copy(spec, tmp_path / "wrong", become_password=wrong))
    assert errors(report) == {"lb1": "", "web2": "",
                              "web1": "sudo on web1 (deploy) refused the become password (ansible_become_password)"}
    _, report = check(inventory_copy(spec, tmp_path / "none", become_password=None))
    assert errors(report)["web1"].startswith("sudo on web1 needs a password for deploy and none was given")
    # Ansible (harden's dry run) is refused on web1 alone, and says so without the password.
    proc = run("harden", "--inventory", inventory_copy(spec, tmp_path / "dry", become_password=wrong), "--check",
               "--limit", "web1")
    assert proc.returncode == 1 and wrong not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    OUTPUTS.append(wrong)


def test_a_password_login_then_sudo_with_its_password(behind, tmp_path):
    # ops has no key on web1: opsctl logs in with ansible_password, then answers sudo's prompt.
    spec, _ = behind
    inv = inventory_copy(spec, tmp_path, become_password="")
    password = spec.deploy_password_file.read_text()
    (Path(inv) / "host_vars/web1.yml").write_text(yaml.safe_dump({
        "ansible_user": "ops", "ansible_password": password, "ansible_become": True,
        "ansible_become_password": password}))
    rc, report = check(inv)
    assert errors(report) == {"lb1": "", "web1": "", "web2": ""}, report["hosts"]
    web1 = next(h for h in spec.hosts if h.name == "web1")
    log = (spec.host_dir(web1) / "upper/var/log/opsctl-lab-sshd.log").read_text()
    assert "Accepted password for ops from " in log


def test_a_configuration_the_login_user_cannot_read_is_a_failed_check_naming_it(behind, tmp_path):
    # deploy without become: php-fpm and nginx run as root and their files are root's.
    spec, _ = behind
    inv = inventory_copy(spec, tmp_path, become_password="")
    (Path(inv) / "host_vars/web1.yml").write_text("ansible_user: deploy\nansible_become: false\n")
    rc, report = check(inv)
    readable = next(r for r in report["results"] if r["host"] == "web1" and r["check"] == "config-readable")
    assert rc == 1 and readable["status"] == "fail" and "\n" not in readable["observed"], readable
    assert "php-fpm 8.2 /etc/php/8.2/fpm/php-fpm.conf: " in readable["observed"], readable
    assert "Permission denied" in readable["observed"], readable


def test_a_changed_host_key_is_refused_per_host(behind, tmp_path):
    spec, _ = behind
    rc, report = check(inventory_copy(spec, tmp_path / "web1", known_hosts=known_hosts_with_new_key(
        spec, tmp_path / "web1", "web1"), become_password=""))
    found = errors(report)
    assert rc == 1 and found["lb1"] == found["web2"] == "", found
    assert found["web1"].startswith("host key") and "\n" not in found["web1"], found
    rc, report = check(inventory_copy(spec, tmp_path / "bastion", known_hosts=known_hosts_with_new_key(
        spec, tmp_path / "bastion", "bastion1"), become_password=""))
    found = errors(report)
    assert rc == 1 and all(e.startswith("jump host bastion1: host key") for e in found.values()), found
    assert len(set(found.values())) == 1


def test_ansible_runs_as_deploy_with_sudo_behind_the_bastion(behind):
    # harden, its convergence and a rolling restart under load behind a bastion are proven on the
    # source-built lab (test_flavor_source.py, also behind one); here Ansible's dry run on web1.
    spec, _ = behind
    proc = run("harden", "--inventory", spec.name, "--check", "--limit", "web1")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_password_is_in_any_output_artifact_or_cache(behind):
    spec, started = behind
    secrets = [spec.deploy_password_file.read_text()] + [o for o in OUTPUTS if o.startswith("wrong-")]
    places = [Path("/var/lib/opsctl/runs"), Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "opsctl"]
    files = [p for place in places if place.exists() for p in place.rglob("*")
             if p.is_file() and p.stat().st_mtime >= started]
    assert any("runs" in str(p) for p in files)   # the runs above left their artifacts
    for secret in secrets:
        assert not [p for p in files if secret.encode() in p.read_bytes()]
        assert not [o for o in OUTPUTS if secret in o and o != secret]


def test_down_ends_every_connection_to_the_lab(behind):
    spec, _ = behind
    masters = subprocess.run(["pgrep", "-af", f"{spec.control_dir}/"], capture_output=True, text=True).stdout
    assert masters, "Ansible's runs left no ControlPersist master in the lab's own ControlPath"
    opsctl("lab", "down", "--name", spec.name, check=True)
    left = subprocess.run(["pgrep", "-af", str(spec.path) + "/"], capture_output=True, text=True).stdout
    assert left == "", left
