"""`opsctl harden` on a real lab: refused overrides change nothing, running values equal what
--explain printed, real processes get the nofile limit, and a second run changes nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.labtools import playbook, recap, ssh
from tests.conftest import opsctl

pytestmark = pytest.mark.lab

SYSCTLS = ("net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_max_tw_buckets",
           "net.ipv4.tcp_tw_reuse")
DROPIN = "/etc/sysctl.d/60-opsctl.conf"


def on_host(lab, host: str, script: str) -> str:
    return ssh(lab, host, script, check=True).stdout


@pytest.fixture(scope="module")
def override(lab):
    """An invariant-breaking override for web1, removed afterwards."""
    path = Path(lab.inventory_dir) / "host_vars" / "web1.yml"
    path.parent.mkdir(exist_ok=True)
    path.write_text("opsctl_capacity_overrides:\n  php_fpm.listen_backlog: 100000\n")
    yield path
    shutil.rmtree(path.parent)


def test_refused_override_is_one_line_naming_host_and_key_and_changes_nothing(lab, override):
    proc = opsctl("harden", "--inventory", lab.name)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "web1" in lines[0] and "php_fpm.listen_backlog=100000" in lines[0], proc.stderr
    standalone = playbook(lab, "opsctl.fleet.harden")
    assert standalone.returncode != 0
    assert "web1: override php_fpm.listen_backlog=100000 refused" in standalone.stdout
    assert all(counts["changed"] == 0 for counts in recap(standalone.stdout).values()), standalone.stdout
    for host in ("lb1", "web1", "web2"):
        assert on_host(lab, host, f"test -e {DROPIN} && echo present || echo absent").strip() == "absent"


@pytest.fixture(scope="module")
def hardened(lab, override):
    override.unlink()
    explained = opsctl("harden", "--inventory", lab.name, "--explain", "--format", "json", check=True)
    first = opsctl("harden", "--inventory", lab.name, timeout=1200)
    return json.loads(explained.stdout), first


def test_first_run_converges_and_restarts_pending_hosts(hardened):
    _, first = hardened
    assert first.returncode == 0, first.stdout + first.stderr
    assert "converged" in first.stdout and "Ansible artifacts:" in first.stdout
    # The lab's stock listen.backlog (-1 = somaxconn) changes, which only a stop/start applies.
    assert "Rolling restart of php-fpm" in first.stderr and "reloaded" in first.stdout


def test_running_sysctls_equal_what_explain_printed(lab, hardened):
    plans, _ = hardened
    for entry in plans:
        running = on_host(lab, entry["host"], "sysctl -n " + " ".join(SYSCTLS)).split()
        wanted = [str(entry["plan"][f"sysctl.{key}"]["value"]) for key in SYSCTLS]
        assert running == wanted, entry["host"]
        # Absent in a network namespace and read-only (global) keys are skipped, never written.
        drop_in = on_host(lab, entry["host"], f"cat {DROPIN}")
        assert "netdev_max_backlog" not in drop_in and "fs.file-max" not in drop_in
        assert "tcp_tw_recycle" not in drop_in


def test_running_workers_get_the_nofile_limit(lab, hardened):
    plans, _ = hardened
    for entry in plans:
        nofile = entry["plan"]["limits.nofile"]["value"]
        names = ["nginx"] + (["php-fpm"] if entry["facts"]["php_version"] else [])
        for name in names:
            limits = on_host(lab, entry["host"],
                             f"for p in $(pgrep -f '^{name}: (pool|worker)'); do grep 'Max open files' /proc/$p/limits; done")
            rows = [line.split()[3:5] for line in limits.splitlines()]
            assert rows and all(row == [str(nofile), str(nofile)] for row in rows), (entry["host"], name, limits)


def test_php_fpm_listen_backlog_is_live_after_the_drained_restart(lab, hardened):
    plans, _ = hardened
    web = next(p for p in plans if p["host"] == "web1")
    queue = on_host(lab, "web1", "ss -lxn | awk '/php/ {print $4}'").split()
    assert queue and all(q == str(web["plan"]["php_fpm.listen_backlog"]["value"]) for q in queue), queue


def test_check_passes_after_harden(lab, hardened):
    """The readiness gate agrees with what harden did: no fail left on any host (clock sync,
    which the lab has no daemon for, may still warn)."""
    proc = opsctl("check", "--inventory", lab.name, "--format", "json", timeout=180)
    report = json.loads(proc.stdout)
    failing = [(r["host"], r["check"], r["observed"]) for r in report["results"] if r["status"] in ("fail", "error")]
    assert proc.returncode == 0 and not failing, failing
    assert report["verdict"] == "ready"


def test_second_run_changes_nothing_through_opsctl_and_standalone(lab, hardened):
    again = opsctl("harden", "--inventory", lab.name, "--no-restart", timeout=1200)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "pending restart" not in again.stdout
    rows = re.findall(r"│ (\w+)\s+│ converged\s+│ \d+\s+│ (\d+)\s+│", again.stdout)
    assert len(rows) == 3 and all(changed == "0" for _, changed in rows), again.stdout
    standalone = playbook(lab, "opsctl.fleet.harden")
    assert standalone.returncode == 0, standalone.stdout[-3000:]
    counts = recap(standalone.stdout)
    assert set(counts) == {"lb1", "web1", "web2"}
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts


def test_systemd_drop_ins_render_and_verify(lab, hardened, tmp_path):
    """systemd is not PID 1 in the lab: render the drop-ins on a host, verify them here."""
    explained, _ = hardened
    nofile = next(p for p in explained if p["host"] == "web1")["plan"]["limits.nofile"]["value"]
    proc = playbook(lab, "opsctl.fleet.harden", "--tags", "limits", "--limit", "web1",
                    "-e", "opsctl_limits_systemd=true")
    assert proc.returncode == 0, proc.stdout[-3000:]
    for unit in ("nginx.service", "php8.2-fpm.service"):
        text = on_host(lab, "web1", f"cat /etc/systemd/system/{unit}.d/opsctl-limits.conf")
        assert f"LimitNOFILE={nofile}\n" in text and text.startswith("# managed by opsctl")
        (tmp_path / f"{unit}.d").mkdir()
        (tmp_path / f"{unit}.d" / "opsctl-limits.conf").write_text(text)
        shutil.copy(f"/lib/systemd/system/{unit}", tmp_path / unit)
        verify = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit)], capture_output=True, text=True,
                                env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"})
        assert verify.returncode == 0 and "opsctl-limits.conf" not in verify.stderr, verify.stderr
    # The same check does notice a broken drop-in.
    (tmp_path / "nginx.service.d" / "opsctl-limits.conf").write_text("[Service]\nLimitNOFILE=lots\n")
    broken = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "nginx.service")], capture_output=True,
                            text=True, env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"})
    assert "opsctl-limits.conf" in broken.stderr
    on_host(lab, "web1", "rm -rf /etc/systemd/system/nginx.service.d/opsctl-limits.conf "
                         "/etc/systemd/system/php8.2-fpm.service.d/opsctl-limits.conf")
