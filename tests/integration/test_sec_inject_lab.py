"""Issue 11 item 8 on the lab: an inventory value that would add lines to a root-owned config
(a newline in a sysctl value, a php-fpm pool setting, a status path; `;` `{` `}` in an nginx
value; shell characters in a path) is refused before any host changes: `opsctl harden` exits 2
with one line, and plain ansible-playbook stops at the validation task, on every host."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from opsctl.paths import collections_env
from tests.labtools import recap, ssh

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
WATCHED = "/etc/sysctl.d /etc/php /etc/nginx /etc/security/limits.d /etc/systemd/system /etc/init.d /etc/default"

CASES = {
    "sysctl-value": ("web", {"opsctl_sysctl_extra": {"net.core.somaxconn": "4096\nnet.ipv4.ip_forward = 1"}},
                     "opsctl_sysctl_extra['net.core.somaxconn']: contains a newline"),
    "pool-setting": ("web", {"opsctl_php_fpm_pools": [{
        "name": "www", "status_listen": "127.0.0.1:9001",
        "settings": {"pm.max_children": "5\nphp_admin_value[auto_prepend_file] = /tmp/x.php"}}]},
        "opsctl_php_fpm_pools[0].settings['pm.max_children']: contains a newline"),
    "fpm-status-path": ("web", {"opsctl_php_fpm_status_path": "/status\npm.status_listen = 0.0.0.0:9001"},
                        "opsctl_php_fpm_status_path: contains a newline"),
    "nginx-status-path": ("lb", {"opsctl_nginx_status_path": "/s { return 200; } location /x"},
                          "opsctl_nginx_status_path: '/s { return 200; } location /x' is not a URI path"),
    "nginx-snippet-path": ("web", {"opsctl_nginx_server_snippet": "/etc/nginx/snippets/x.conf;\ninclude /tmp/y"},
                           "opsctl_nginx_server_snippet: contains a newline"),
    "limits-domain": ("web", {"opsctl_limits_users": ["*", "root\n*\thard\tcore\tunlimited"]},
                      "opsctl_limits_users[1]: contains a newline"),
    "lifecycle-backup-dir": ("web", {"opsctl_lifecycle_backup_dir": "/var/backups/x; touch /tmp/pwned"},
                             "opsctl_lifecycle_backup_dir: the path may hold only"),
    "capacity-override": ("web", {"opsctl_capacity_overrides": {"sysctl.net.core.somaxconn": "4096\n"}},
                          "opsctl_capacity_overrides['sysctl.net.core.somaxconn']: contains a newline"),
}


def fingerprint(lab) -> dict[str, str]:
    """Every file (name and checksum) under the configuration trees, per host."""
    command = (f"find {WATCHED} \\( -type f -o -type l \\) -print0 2>/dev/null | sort -z | "
               f"xargs -0 md5sum 2>&1; ls -R /var/backups/opsctl 2>&1; true")
    return {h.name: ssh(lab, h, command, check=True).stdout for h in lab.hosts}


def bad_inventory(lab, tmp_path: Path, group: str, values: dict) -> Path:
    inv = tmp_path / "inventory"
    shutil.copytree(lab.inventory_dir, inv)
    path = inv / "group_vars" / f"{group}.yml"
    data = yaml.safe_load(path.read_text())
    data.update(values)
    path.write_text(yaml.safe_dump(data))
    return inv


def clean_env() -> dict[str, str]:
    return dict({k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}, ANSIBLE_PIPELINING="True",
                **collections_env())


@pytest.fixture(scope="module")
def before(lab):
    return fingerprint(lab)


@pytest.mark.parametrize("case", list(CASES))
def test_harden_refuses_before_any_host_changes(lab, tmp_path, before, case):
    group, values, message = CASES[case]
    inv = bad_inventory(lab, tmp_path, group, values)
    proc = subprocess.run([sys.executable, "-m", "opsctl", "harden", "--inventory", str(inv)], capture_output=True,
                          text=True, timeout=900, cwd=REPO, env=clean_env())
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    host = "lb1" if group == "lb" else "web1"
    assert lines[0].startswith(f"opsctl: error: {host}: {message}"), lines[0]
    assert fingerprint(lab) == before


@pytest.mark.parametrize("case", list(CASES))
def test_plain_ansible_playbook_stops_at_the_validation_task(lab, tmp_path, before, case):
    group, values, message = CASES[case]
    inv = bad_inventory(lab, tmp_path, group, values)
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv),
                           "opsctl.fleet.harden"], capture_output=True, text=True, timeout=900, cwd=REPO,
                          env=clean_env())
    assert proc.returncode != 0
    failed = [line for line in proc.stdout.splitlines() if line.startswith("fatal: [")]
    assert failed and all(message in line for line in failed), proc.stdout[-4000:]
    task = proc.stdout.split(failed[0])[0].rsplit("TASK [", 1)[1].split("]", 1)[0]
    assert task == "opsctl.fleet.opsctl_capacity : Refuse inventory values that would add lines to a configuration file"
    assert all(counts["changed"] == 0 for counts in recap(proc.stdout).values()), proc.stdout[-3000:]
    assert fingerprint(lab) == before


def test_a_role_on_its_own_checks_its_values(lab, tmp_path, before):
    """opsctl.fleet.lifecycle has no capacity gate: the role's own validation stops it."""
    inv = bad_inventory(lab, tmp_path, "web", {"opsctl_lifecycle_cron_paths": ["/etc/crontab", "/etc/cron.d x"]})
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inv),
                           "opsctl.fleet.lifecycle", "--check"], capture_output=True, text=True, timeout=900,
                          cwd=REPO, env=clean_env())
    assert proc.returncode != 0
    assert "TASK [opsctl.fleet.opsctl_lifecycle : Refuse values that would add lines to the init scripts, units and cron files]" \
        in proc.stdout
    assert "opsctl_lifecycle_cron_paths[1]: the path may hold only" in proc.stdout
    assert all(counts["changed"] == 0 for counts in recap(proc.stdout).values())
    assert fingerprint(lab) == before
