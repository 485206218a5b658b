"""Issue #11, log rotation, on the lab: bad values change nothing on any host (role and opsctl),
and the deployed opsctl-logprune withstands www-data racing it."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests import labtools
from tests.conftest import opsctl
from tests.labtools import ssh

pytestmark = pytest.mark.lab

# Everything the role writes or moves, with contents: equal before and after = nothing changed.
STATE = ("cd / && sha256sum etc/logrotate.d/* etc/cron.d/* usr/local/sbin/opsctl-logprune "
         "etc/systemd/system/opsctl-logprune.* etc/systemd/system/logrotate.timer.d/* 2>/dev/null; "
         "ls -la etc/cron.daily var/backups/opsctl var/backups/opsctl/logrotate 2>&1; "
         "find / -xdev -name pwned 2>/dev/null")
INJECTED_POSTROTATE = "/var/log/nginx/*.log {\n}\n/var/log/x.log {\n\tpostrotate\n\t\ttouch /pwned\n\tendscript\n}\n#"


def playbook(spec, *extra: str) -> subprocess.CompletedProcess:
    return labtools.playbook(spec, "opsctl.fleet.logrotate", *extra, timeout=600)


@pytest.fixture(scope="module")
def applied(lab):
    """The role applied with its defaults: the state every refused run must leave as it was."""
    first = playbook(lab)
    assert first.returncode == 0, first.stdout[-3000:]
    yield lab
    ssh(lab, "web2", "rm -rf /var/log/shop /etc/opsctl-precious /tmp/opsctl-prune.out")
    assert playbook(lab).returncode == 0


def state(lab) -> dict[str, str]:
    return {h.name: ssh(lab, h, STATE).stdout for h in lab.hosts}


@pytest.mark.parametrize("extra, message", [
    ({"opsctl_logrotate_nginx_logs": INJECTED_POSTROTATE}, "opsctl_logrotate_nginx_logs: expected an absolute path"),
    ({"opsctl_logrotate_app_logs": [{"path": "/var/log/shop/*.log", "owner": "www-data\n\tpostrotate\n\t\ttouch /pwned\n\tendscript"}]},
     "opsctl_logrotate_app_logs[0].owner: expected a user or group name"),
    ({"opsctl_logrotate_backup_dir": "/var/backups/x; touch /pwned"}, "opsctl_logrotate_backup_dir: expected an absolute path"),
    ({"opsctl_logrotate_window": {"start": "04:00", "prune_delay_minutes": -120}},
     "opsctl_logrotate_window.prune_delay_minutes: expected a whole number of minutes from 1 to 720, got -120"),
    ({"opsctl_logrotate_window": {"start": "04:00", "timezone": "Mars/Olympus"}},
     "opsctl_logrotate_window.timezone: unknown time zone 'Mars/Olympus'"),
])
def test_plain_ansible_playbook_refuses_and_changes_nothing(applied, extra, message):
    lab = applied
    before = state(lab)
    run = playbook(lab, "-e", json.dumps(extra))
    assert run.returncode != 0
    assert message in run.stdout + run.stderr, run.stdout[-3000:]
    assert state(lab) == before


def bad_inventory(lab, tmp_path, group_vars: str):
    """The lab's inventory plus one bad value for every host."""
    copy = tmp_path / "inventory"
    shutil.copytree(lab.inventory_dir, copy)
    (copy / "group_vars" / "all.yml").write_text(group_vars)
    return str(copy)


@pytest.mark.parametrize("command", [("logrotate", "apply"), ("harden", "--tags", "logrotate"), ("harden",)])
@pytest.mark.parametrize("group_vars, message", [
    (f"opsctl_logrotate_nginx_logs: {json.dumps(INJECTED_POSTROTATE)}\n", "opsctl_logrotate_nginx_logs: expected an absolute path"),
    ("opsctl_logrotate_window: {start: '04:00', prune_delay_minutes: -120}\n", "prune_delay_minutes"),
    ("opsctl_logrotate_window: '04:00'\n", "opsctl_logrotate_window: expected a mapping"),
])
def test_opsctl_refuses_in_one_line_and_changes_nothing(applied, tmp_path, command, group_vars, message):
    lab = applied
    before = state(lab)
    result = opsctl(*command, "--inventory", bad_inventory(lab, tmp_path, group_vars))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsctl: error: ") and message in lines[0], result.stderr
    assert state(lab) == before


RACE = """
set -e
mkdir -p /var/log/shop && chown www-data:www-data /var/log/shop
head -c 3145728 /dev/urandom > /etc/opsctl-precious && chmod 644 /etc/opsctl-precious
f=/var/log/shop/app.log-20200101-1
rm -f $f $f.moved && fallocate -l 8M $f && chown www-data:www-data $f && touch -d '40 days ago' $f
before=$(sha256sum < /etc/opsctl-precious)
/usr/local/sbin/opsctl-logprune > /tmp/opsctl-prune.out 2>&1 & pid=$!
while [ "$(stat -c %s $f)" -ge 8388608 ] && kill -0 $pid 2>/dev/null; do sleep 0.01; done
# The PHP application's user, between two truncation steps: the log becomes a link to root's file.
setpriv --reuid=www-data --regid=www-data --clear-groups sh -c "mv $f $f.moved && ln -s /etc/opsctl-precious $f"
rc=0; wait $pid || rc=$?
[ "$(sha256sum < /etc/opsctl-precious)" = "$before" ] && echo victim-untouched || echo victim-changed
echo "prune-rc=$rc"; cat /tmp/opsctl-prune.out
"""


def test_deployed_prune_withstands_www_data_swapping_a_log_for_a_symlink(applied):
    lab = applied
    shop = json.dumps({"opsctl_logrotate_app_logs": [{"path": "/var/log/shop/*.log", "owner": "www-data",
                                                      "group": "www-data"}],
                       "opsctl_logrotate_prune_step_mb": 1, "opsctl_logrotate_prune_step_pause_ms": 300})
    assert playbook(lab, "--limit", "web2", "-e", shop).returncode == 0
    out = ssh(lab, "web2", RACE, timeout=120).stdout
    assert "victim-untouched" in out, out
    assert "pruning there as www-data:www-data" in out and "it changed since the scan" in out, out
    assert "prune-rc=1" in out  # what it left alone is reported, not swallowed


def test_plain_harden_playbook_refuses_log_rotation_values_before_any_role_runs(applied):
    """harden.yml runs log rotation last: its values are refused before the first role changes a file."""
    lab = applied
    before = state(lab)
    run = labtools.playbook(lab, "opsctl.fleet.harden", "-e",
                            json.dumps({"opsctl_logrotate_nginx_logs": INJECTED_POSTROTATE}), timeout=600)
    assert run.returncode != 0
    assert "opsctl_logrotate_nginx_logs: expected an absolute path" in run.stdout, run.stdout[-3000:]
    assert "opsctl_sysctl" not in run.stdout and "Opsctl_sysctl" not in run.stdout, run.stdout[-3000:]
    assert all(counts["changed"] == 0 for counts in labtools.recap(run.stdout).values()), run.stdout[-2000:]
    assert state(lab) == before
