"""The fleet layer on real lab hosts (issue 11, items 5, 7, 9): vaulted inventories through every
command and on to ansible-playbook, no secret in a run's files, the operator's ansible.cfg and
templated inventory values seen by opsctl and Ansible alike."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.lab

VENV_BIN = Path(sys.executable).parent
PASSWORD = "vault-pw-5d21c9"
INVENTORY_SECRET = "inv-secret-8a4f02"
ENV_SECRET = "env-secret-31be77"


def opsctl(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "opsctl", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=environment, stdin=subprocess.DEVNULL, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsctl: error: ") and "Traceback" not in proc.stderr
    return lines[0]


def files_holding(root: Path, *needles: str) -> list[str]:
    """Every file under ROOT that holds one of NEEDLES (as text or bytes)."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {n}" for n in needles if n.encode() in data]
    return found


def with_secrets(lab, root: Path) -> Path:
    """A copy of the lab's inventory carrying passwords opsctl must never write anywhere."""
    inv = root / "inventory"
    shutil.copytree(lab.inventory_dir, inv)
    (inv / "group_vars/all.yml").write_text(yaml.safe_dump({
        "ansible_become_password": INVENTORY_SECRET, "opsctl_api_token": INVENTORY_SECRET,
        "shop_db_password": INVENTORY_SECRET}))
    return inv


@pytest.fixture
def vaulted(lab, tmp_path) -> tuple[Path, Path]:
    """The lab's inventory with group_vars/web.yml (event profile, balancers) vault-encrypted."""
    inv = with_secrets(lab, tmp_path)
    password_file = tmp_path / "vault-pass"
    password_file.write_text(PASSWORD + "\n")
    subprocess.run([str(VENV_BIN / "ansible-vault"), "encrypt", "--vault-password-file", str(password_file),
                    str(inv / "group_vars/web.yml")], check=True, capture_output=True, stdin=subprocess.DEVNULL)
    assert (inv / "group_vars/web.yml").read_text().startswith("$ANSIBLE_VAULT")
    return inv, password_file


def test_every_command_on_a_vaulted_inventory_without_its_secret_is_one_line(vaulted, tmp_path):
    inv, _ = vaulted
    home = tmp_path / "home"
    for command in (["inventory"], ["check"], ["harden", "--check"], ["harden", "--explain"],
                    ["reload", "php-fpm", "--rolling", "--check"], ["logrotate", "plan"]):
        line = one_line_error(opsctl(*command, "--inventory", str(inv), env={"OPSCTL_HOME": str(home)}))
        assert str(inv / "group_vars/web.yml") in line and "vault" in line, (command, line)
    assert not (home / "runs").exists() or not list((home / "runs").iterdir())


def test_vaulted_inventory_check_and_dry_run_harden_with_a_password_file(lab, vaulted, tmp_path):
    inv, password_file = vaulted
    env = {"OPSCTL_HOME": str(tmp_path / "home"), "OPSCTL_TEST_TOKEN": ENV_SECRET, "SHOP_DB_PASSWORD": ENV_SECRET}
    vault = ("--vault-password-file", str(password_file))
    listed = opsctl("inventory", "--inventory", str(inv), "--format", "json", *vault, env=env)
    assert listed.returncode == 0, listed.stderr
    web = next(g for g in json.loads(listed.stdout)["groups"] if g["name"] == "web")
    assert web["profile"]["peak_qps"] == 100

    checked = opsctl("check", "--inventory", str(inv), "--format", "json", *vault, env=env, timeout=180)
    assert checked.returncode in (0, 1), checked.stderr
    report = json.loads(checked.stdout)
    assert {h["host"]: h["status"] for h in report["hosts"]} == {h.name: "ok" for h in lab.hosts}
    # The profile came out of the vaulted file: the capacity checks judge web hosts by it.
    assert {r["host"] for r in report["results"] if r["check"] == "fpm-backlog-littles-law"} == {"web1", "web2"}

    hardened = opsctl("harden", "--check", "--inventory", str(inv), "--limit", "web1", *vault, env=env)
    assert hardened.returncode == 0, hardened.stdout[-3000:] + hardened.stderr[-3000:]
    assert "web1" in hardened.stdout and "dry run" in hardened.stdout
    assert files_holding(tmp_path / "home", PASSWORD, INVENTORY_SECRET, ENV_SECRET) == []


def test_no_secret_from_the_environment_or_inventory_lands_in_a_run(lab, tmp_path):
    inv = with_secrets(lab, tmp_path)
    home = tmp_path / "home"
    proc = opsctl("logrotate", "apply", "--check", "--inventory", str(inv), "--limit", "web1",
                  env={"OPSCTL_HOME": str(home), "OPSCTL_TEST_TOKEN": ENV_SECRET, "SHOP_DB_PASSWORD": ENV_SECRET,
                       "ANSIBLE_NET_PASSWORD": ENV_SECRET})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = list((home / "runs").iterdir())
    assert len(runs) == 1 and list(runs[0].rglob("command")), "the run left no artifacts to inspect"
    assert files_holding(home, INVENTORY_SECRET, ENV_SECRET) == []
    assert ENV_SECRET not in proc.stdout + proc.stderr and INVENTORY_SECRET not in proc.stdout + proc.stderr


def test_ask_vault_pass_answers_ansible_playbook_and_leaves_no_trace(vaulted, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    inv, _ = vaulted
    home = tmp_path / "home"
    child = pexpect.spawn(sys.executable, ["-m", "opsctl", "logrotate", "apply", "--check", "--inventory", str(inv),
                                           "--limit", "web1", "--ask-vault-pass"],
                          cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO), OPSCTL_HOME=str(home)),
                          encoding="utf-8", timeout=300, dimensions=(50, 200))
    child.expect("Vault password: ")
    child.sendline(PASSWORD)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before[-3000:]
    assert "converged" in child.before and PASSWORD not in child.before
    assert list(home.rglob("command")) and files_holding(home, PASSWORD) == []


def test_the_operators_ansible_cfg_is_read_by_the_playbook_too(lab, tmp_path):
    """opsctl read ./ansible.cfg, the ansible-playbook it started (in the playbooks dir) did not."""
    cwd = tmp_path / "operator"
    cwd.mkdir(mode=0o755)
    log = tmp_path / "ansible.log"
    (cwd / "ansible.cfg").write_text(f"[defaults]\nlog_path = {log}\n")
    proc = opsctl("logrotate", "apply", "--check", "--inventory", str(lab.inventory_dir), "--limit", "web1",
                  cwd=cwd, env={"OPSCTL_HOME": str(tmp_path / "home")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert log.is_file() and "PLAY RECAP" in log.read_text()


def test_templated_addresses_are_resolved_for_check_and_explain(lab, tmp_path):
    inv = tmp_path / "inventory"
    shutil.copytree(lab.inventory_dir, inv)
    web1 = next(h for h in lab.hosts if h.name == "web1")
    net, last = web1.address.rsplit(".", 1)
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    hosts["all"]["vars"]["opsctl_test_net"] = net
    hosts["all"]["children"]["web"]["hosts"]["web1"]["ansible_host"] = "{{ opsctl_test_net }}." + last
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))

    checked = opsctl("check", "--inventory", str(inv), "--limit", "web1", "--format", "json", timeout=180)
    assert checked.returncode in (0, 1), checked.stderr
    host = json.loads(checked.stdout)["hosts"][0]
    assert (host["address"], host["status"]) == (web1.address, "ok"), host
    explained = opsctl("harden", "--explain", "--inventory", str(inv), "--limit", "web1", "--format", "json")
    assert explained.returncode == 0, explained.stdout[-2000:] + explained.stderr[-2000:]
    [plan] = json.loads(explained.stdout)
    assert plan["host"] == "web1" and plan["error"] is None and plan["facts"]["cpus"] >= 1 and plan["plan"]
