"""Issue 11 item 10 on the lab: opsctl's own SSH (check, harden's probe) checks host keys
against known_hosts as OpenSSH reads it, against each host's real sshd; and a configuration
that turns checking off for Ansible stops `opsctl harden` and `opsctl reload` before anything
runs, unless the hosts accept it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from opsctl.sshexec import ExecResult, Timeouts, run_many, target_for
from tests.labtools import ssh

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
PORT = 2222


def lab_keys(lab) -> dict[str, str]:
    """address -> "type base64" of each lab host, from the lab's own known_hosts."""
    return {line.split()[0]: " ".join(line.split()[1:3]) for line in lab.known_hosts.read_text().splitlines()}


def host(lab, name: str):
    return next(h for h in lab.hosts if h.name == name)


def connect(lab, tmp_path: Path, user_file: str | Path, global_file: str | Path | None = None,
            port: int = 22, names: tuple[str, ...] = ("lb1", "web1", "web2")) -> dict[str, ExecResult]:
    """One real SSH exchange with each lab host, known_hosts given as Ansible would give it."""
    args = (f"-o UserKnownHostsFile={user_file} -o GlobalKnownHostsFile={global_file or tmp_path / 'no-global'} "
            f"-o StrictHostKeyChecking=yes")
    targets = [target_for(n, host(lab, n).address, port, "root",
                          {"ansible_ssh_common_args": args, "ansible_ssh_private_key_file": str(lab.key_file)})
               for n in names]
    return {r.host: r for r in run_many(targets, b"echo ok", "sh -s", timeouts=Timeouts(connect=10, host=20, run=60))}


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def other_key(tmp_path: Path) -> str:
    key = tmp_path / "other_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def test_an_unknown_host_key_is_refused(lab, tmp_path):
    keys = lab_keys(lab)
    web1 = host(lab, "web1").address
    known = write(tmp_path / "known_hosts", *(f"{a} {k}" for a, k in keys.items() if a != web1))
    results = connect(lab, tmp_path, known)
    assert not results["web1"].ok
    assert results["web1"].error.startswith(f"unknown host key: {web1} is not in {known}"), results["web1"].error
    assert results["web2"].ok and results["web2"].stdout.strip() == "ok" and results["lb1"].ok


def test_a_wrong_host_key_is_refused(lab, tmp_path):
    keys = lab_keys(lab)
    web1 = host(lab, "web1").address
    known = write(tmp_path / "known_hosts", *(f"{a} {other_key(tmp_path) if a == web1 else k}" for a, k in keys.items()))
    results = connect(lab, tmp_path, known)
    assert results["web1"].error.startswith(f"host key mismatch: {web1} offered a ssh-ed25519 key"), results["web1"].error
    assert results["web2"].ok


def test_a_revoked_key_is_refused_even_when_listed(lab, tmp_path):
    keys = lab_keys(lab)
    web1 = host(lab, "web1").address
    known = write(tmp_path / "known_hosts", *(f"{a} {k}" for a, k in keys.items()), f"@revoked * {keys[web1]}")
    results = connect(lab, tmp_path, known)
    assert results["web1"].error.startswith(f"revoked host key: {web1}"), results["web1"].error
    assert results["web2"].ok and results["lb1"].ok


def test_a_cert_authority_line_breaks_no_other_host(lab, tmp_path):
    keys = lab_keys(lab)
    subnet = lab.subnet.rsplit(".", 1)[0]
    ca = other_key(tmp_path)
    known = write(tmp_path / "known_hosts", f"@cert-authority *.example.com,{subnet}.* {ca}",
                  *(f"{a} {k}" for a, k in keys.items()))
    results = connect(lab, tmp_path, known)
    assert all(r.ok for r in results.values()), {n: r.error for n, r in results.items()}
    # A host whose only trust is the CA: opsctl cannot verify host certificates, and says so.
    web1 = host(lab, "web1").address
    only_ca = write(tmp_path / "ca_only", f"@cert-authority {subnet}.* {ca}",
                    *(f"{a} {k}" for a, k in keys.items() if a != web1))
    results = connect(lab, tmp_path, only_ca)
    assert "trusted only through @cert-authority" in results["web1"].error and results["web2"].ok


def test_hashed_entries(lab, tmp_path):
    known = tmp_path / "known_hosts"
    shutil.copy(lab.known_hosts, known)
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert all(line.startswith("|1|") for line in known.read_text().splitlines())
    results = connect(lab, tmp_path, known)
    assert all(r.ok for r in results.values()), {n: r.error for n, r in results.items()}


def test_a_global_file_only(lab, tmp_path):
    results = connect(lab, tmp_path, tmp_path / "no-such-file", global_file=lab.known_hosts)
    assert all(r.ok for r in results.values()), {n: r.error for n, r in results.items()}
    # Several user files, the key only in the second, as UserKnownHostsFile lists them.
    results = connect(lab, tmp_path, f"'{tmp_path / 'empty'} {lab.known_hosts}'")
    assert all(r.ok for r in results.values()), {n: r.error for n, r in results.items()}


@pytest.fixture
def sshd_on_another_port(lab):
    web1 = host(lab, "web1")
    pidfile = "/run/opsctl-test-sshd.pid"
    ssh(lab, web1, f"/usr/sbin/sshd -f /etc/opsctl-lab/sshd_config -p {PORT} -o PidFile={pidfile}", check=True)
    # sshd forks into the background before it listens: wait (bounded) until it does.
    ssh(lab, web1, f"for i in $(seq 100); do ss -Hltn 'sport = :{PORT}' | grep -q . && exit 0; sleep 0.1; done; exit 1",
        check=True)
    yield web1
    ssh(lab, web1, f"kill $(cat {pidfile})")


def test_a_host_on_another_port_is_looked_up_as_host_and_port(lab, tmp_path, sshd_on_another_port):
    web1 = sshd_on_another_port.address
    key = lab_keys(lab)[web1]
    results = connect(lab, tmp_path, write(tmp_path / "ported", f"[{web1}]:{PORT} {key}"), port=PORT, names=("web1",))
    assert results["web1"].ok, results["web1"].error
    # The same key recorded for port 22 only does not vouch for port 2222 (ssh does the same).
    results = connect(lab, tmp_path, write(tmp_path / "plain", f"{web1} {key}"), port=PORT, names=("web1",))
    assert results["web1"].error.startswith(f"unknown host key: {web1} (as [{web1}]:{PORT})"), results["web1"].error


def opsctl(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return subprocess.run([sys.executable, "-m", "opsctl", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=dict(clean, **(env or {})))


def inventory_copy(lab, tmp_path: Path, **all_vars) -> Path:
    inv = tmp_path / "inventory"
    shutil.copytree(lab.inventory_dir, inv)
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    hosts["all"]["vars"].update(all_vars)
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    return inv


def test_check_reads_markers_and_refuses_a_revoked_key(lab, tmp_path):
    keys = lab_keys(lab)
    web2 = host(lab, "web2").address
    known = write(tmp_path / "known_hosts", f"@cert-authority *.example.com {other_key(tmp_path)}",
                  *(f"{a} {k}" for a, k in keys.items()), f"@revoked {web2} {keys[web2]}")
    inv = inventory_copy(lab, tmp_path, opsctl_known_hosts=str(known),
                         ansible_ssh_common_args=f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes")
    proc = opsctl("check", "--inventory", str(inv), "--format", "json", timeout=300)
    status = {h["host"]: h for h in json.loads(proc.stdout)["hosts"]}
    assert status["web2"]["status"] == "error" and status["web2"]["error"].startswith(f"revoked host key: {web2}")
    assert status["web1"]["status"] == status["lb1"]["status"] == "ok", status


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return lines[0]


def test_harden_refuses_when_ansible_would_not_check_host_keys(lab, tmp_path):
    proc = opsctl("harden", "--inventory", str(lab.inventory_dir), "--check", env={"ANSIBLE_HOST_KEY_CHECKING": "False"})
    assert one_line_error(proc).startswith("opsctl: error: host key checking is off for Ansible's connection to lb1 "
                                           "(and 2 more host(s)): ANSIBLE_HOST_KEY_CHECKING=False in the environment")
    cfg = write(tmp_path / "ansible.cfg", "[defaults]", "host_key_checking = False")
    proc = opsctl("harden", "--inventory", str(lab.inventory_dir), "--check", env={"ANSIBLE_CONFIG": str(cfg)})
    assert f"host_key_checking=False in {cfg}" in one_line_error(proc)
    inv = inventory_copy(lab, tmp_path, ansible_ssh_common_args="-o StrictHostKeyChecking=no")
    proc = opsctl("reload", "php-fpm", "--rolling", "--inventory", str(inv), "--limit", "web1")
    # reload prints its plan first; the error is the one line after it, and nothing ran.
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "opsctl: error: host key checking is off for Ansible's connection to web1: StrictHostKeyChecking=no in "
        "ansible_ssh_common_args (the inventory): Ansible would talk to any machine that answers at that address. "
        "Turn it back on, or set opsctl_accept_unchecked_host_keys: true for these hosts to run anyway")


def test_accepted_unchecked_host_keys_warn_once(lab, tmp_path):
    inv = inventory_copy(lab, tmp_path, opsctl_accept_unchecked_host_keys=True)
    proc = opsctl("harden", "--inventory", str(inv), "--limit", "web1", "--check", "--tags", "sysctl",
                  env={"ANSIBLE_HOST_KEY_CHECKING": "False"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "opsctl: warning:" in line]
    assert warnings == ["opsctl: warning: host key checking is off for Ansible's connection to web1: "
                        "ANSIBLE_HOST_KEY_CHECKING=False in the environment (accepted by "
                        "opsctl_accept_unchecked_host_keys)"], proc.stderr
