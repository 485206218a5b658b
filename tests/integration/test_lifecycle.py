"""opsctl_lifecycle on the lab: reload, restart and the nightly cron job lose no order under load,
a broken config signals nothing, the role is idempotent, the systemd drop-ins verify, and
state=absent puts the vendor's files back."""

import os
import shlex
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from opsctl.lab.load import BackgroundLoad, Orders
from tests import labtools
from tests.labtools import recap, ssh

pytestmark = pytest.mark.lab

FPM = "/etc/init.d/php8.2-fpm"
CRON = "/etc/cron.d/opsctl-test-nightly"
PLANTED = ("SHELL=/bin/sh\n"
           "28 5 * * * root /etc/init.d/php8.2-fpm restart >/dev/null 2>&1\n"
           "30 5 * * * root /usr/bin/find /tmp -name '*.tmp' -mtime +7 -delete\n")


def playbook(spec, *args: str) -> subprocess.CompletedProcess:
    return labtools.playbook(spec, "opsctl.fleet.lifecycle", *args, timeout=400)


def master(spec, host) -> str:
    return ssh(spec, host, "cat /run/php/php8.2-fpm.pid").stdout.strip()


def workers(spec, host) -> set[str]:
    return set(ssh(spec, host, "pgrep -P $(cat /run/php/php8.2-fpm.pid)").stdout.split())


def under_load(spec, host, command: str) -> tuple[subprocess.CompletedProcess, object, Orders]:
    """20 concurrent order POSTs straight to the host's nginx for ~6 s, `command` at second 2."""
    prefix = uuid.uuid4().hex[:8]
    with BackgroundLoad(host.address, "/order.php", seconds=6, concurrency=20, order_prefix=prefix) as load:
        time.sleep(2)
        proc = ssh(spec, host, command)
    time.sleep(1)
    ledger = ssh(spec, host, "cat /var/lib/opsctl-lab/orders.log").stdout
    return proc, load.result, Orders.from_ledger(ledger, prefix)


@pytest.fixture(scope="module")
def applied(lab):
    web1 = lab.by_role("web")[0]
    assert ssh(lab, web1, f"printf %s {shlex.quote(PLANTED)} > {CRON}").returncode == 0
    first = playbook(lab)
    assert first.returncode == 0, first.stdout[-4000:]
    return lab, web1, first


def test_second_run_changes_nothing(applied):
    lab, _, _ = applied
    second = playbook(lab)
    assert second.returncode == 0, second.stdout[-3000:]
    counts = recap(second.stdout)
    assert set(counts) == {h.name for h in lab.hosts}
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts


def test_settings_scripts_and_cron_are_in_place_and_reported(applied):
    lab, web1, first = applied
    conf = ssh(lab, web1, "grep -E '^(process_control_timeout|worker_shutdown_timeout)' "
                          "/etc/php/8.2/fpm/php-fpm.conf /etc/nginx/nginx.conf").stdout
    assert "process_control_timeout = 5s" in conf and "worker_shutdown_timeout 5s;" in conf  # client timeout 5 s
    for script in (FPM, "/etc/init.d/nginx"):
        assert "managed by opsctl" in ssh(lab, web1, f"sed -n 2p {script}").stdout
    vendor = ssh(lab, web1, "cat /var/backups/opsctl/lifecycle/init.d/php8.2-fpm").stdout
    assert vendor == Path("/etc/init.d/php8.2-fpm").read_text()  # the machine's (= the package's) script
    assert "diversion of /etc/init.d/php8.2-fpm" in ssh(lab, web1, "dpkg-divert --list").stdout
    lines = ssh(lab, web1, f"cat {CRON}").stdout.splitlines()
    assert lines == ["SHELL=/bin/sh",
                     "# opsctl_lifecycle replaced: 28 5 * * * root /etc/init.d/php8.2-fpm restart >/dev/null 2>&1",
                     "28 5 * * * root /etc/init.d/php8.2-fpm reload >/dev/null 2>&1",
                     "30 5 * * * root /usr/bin/find /tmp -name '*.tmp' -mtime +7 -delete"]
    assert (f"{CRON}:2 replaced: 28 5 * * * root /etc/init.d/php8.2-fpm restart >/dev/null 2>&1 -> "
            "28 5 * * * root /etc/init.d/php8.2-fpm reload >/dev/null 2>&1") in first.stdout


def test_reload_under_load_loses_nothing_and_replaces_every_worker(applied):
    lab, web1, _ = applied
    before = workers(lab, web1)
    proc, load, orders = under_load(lab, web1, f"{FPM} reload")
    assert proc.returncode == 0, proc.stderr
    assert load.sent > 40 and load.non_2xx == 0 and load.errors == 0, load
    assert orders.begun > 40 and orders.orphaned == 0, orders
    after = workers(lab, web1)
    assert after and not (after & before)


def test_restart_under_load_cuts_no_order(applied):
    lab, web1, _ = applied
    old = master(lab, web1)
    proc, load, orders = under_load(lab, web1, f"{FPM} restart")
    assert proc.returncode == 0, proc.stderr
    assert "stopped gracefully" in proc.stdout and master(lab, web1) != old
    assert orders.begun > 40 and orders.orphaned == 0, (orders, load)


def test_the_rewritten_nightly_cron_job_cuts_no_order(applied):
    lab, web1, _ = applied
    line = next(l for l in ssh(lab, web1, f"cat {CRON}").stdout.splitlines() if l.startswith("28 5"))
    command = line.split(None, 6)[6]  # what cron runs: after 5 time fields and the user
    before = workers(lab, web1)
    proc, load, orders = under_load(lab, web1, command)
    assert proc.returncode == 0, proc.stderr
    assert load.non_2xx == 0 and load.errors == 0, load
    assert orders.begun > 40 and orders.orphaned == 0, orders
    assert not (workers(lab, web1) & before)


def test_config_error_signals_nothing_and_the_old_master_keeps_serving(applied):
    lab, web1, _ = applied
    pool = "/etc/php/8.2/fpm/pool.d/www.conf"
    assert ssh(lab, web1, f"cp -p {pool} /root/www.conf.good && echo 'pm.max_children = lots' >> {pool}").returncode == 0
    try:
        old, old_workers = master(lab, web1), workers(lab, web1)
        for action in ("reload", "restart"):
            proc = ssh(lab, web1, f"{FPM} {action}")
            assert proc.returncode != 0
            assert "configuration test failed, nothing was signalled" in proc.stderr
            assert "pm.max_children" in proc.stderr and "ERROR" in proc.stderr  # php-fpm -t's own message
            assert master(lab, web1) == old and workers(lab, web1) == old_workers
        health = ssh(lab, web1, "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1/health.php').status)\"")
        assert health.stdout.strip() == "200"
    finally:
        ssh(lab, web1, f"mv /root/www.conf.good {pool}")


def verify_dropin(unit_dir: Path, unit: str) -> subprocess.CompletedProcess:
    # The drop-in next to a copy of the vendor unit; the trailing ':' keeps the default search
    # path for the targets the unit refers to. systemd-analyze exits 0 on warnings: read stderr.
    env = dict(os.environ, SYSTEMD_UNIT_PATH=f"{unit_dir}:")
    return subprocess.run(["systemd-analyze", "verify", unit], capture_output=True, text=True, env=env, timeout=60)


def test_systemd_dropins_verify_and_absent_restores_the_vendor_files(applied):
    lab, _, _ = applied
    web2 = lab.by_role("web")[1]
    forced = playbook(lab, "--limit", web2.name, "-e", "opsctl_lifecycle_service_manager=systemd")
    assert forced.returncode == 0, forced.stdout[-3000:]
    upper = lab.host_dir(web2) / "upper/etc/systemd/system"
    for unit in ("php8.2-fpm.service", "nginx.service"):
        dropin = (upper / f"{unit}.d/opsctl-graceful.conf").read_text()
        assert "KillSignal=SIGQUIT" in dropin and "KillMode=mixed" in dropin and "TimeoutStopSec=10" in dropin
        assert dropin.startswith("# managed by opsctl")
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / f"{unit}.d").mkdir()
            (Path(tmp) / f"{unit}.d/opsctl-graceful.conf").write_text(dropin)
            (Path(tmp) / unit).write_text(Path(f"/lib/systemd/system/{unit}").read_text())
            checked = verify_dropin(Path(tmp), unit)
            assert checked.returncode == 0 and checked.stderr == "", checked.stderr
            # The same check sees a broken drop-in: it really reads ours.
            (Path(tmp) / f"{unit}.d/opsctl-graceful.conf").write_text(dropin.replace("SIGQUIT", "SIGNOPE"))
            assert "opsctl-graceful.conf" in verify_dropin(Path(tmp), unit).stderr
    reverted = playbook(lab, "--limit", web2.name, "-e", "opsctl_lifecycle_state=absent")
    assert reverted.returncode == 0, reverted.stdout[-3000:]
    for script in ("php8.2-fpm", "nginx"):
        assert ssh(lab, web2, f"cat /etc/init.d/{script}").stdout == Path(f"/etc/init.d/{script}").read_text()
    assert "opsctl" not in ssh(lab, web2, "dpkg-divert --list '/etc/init.d/*'").stdout
    assert ssh(lab, web2, "ls /etc/systemd/system/*.d/opsctl-graceful.conf").returncode != 0
    # The lifecycle role's own lines are gone (the nginx role's access-log lines are not its own).
    assert ssh(lab, web2, "grep -c opsctl_lifecycle /etc/php/8.2/fpm/php-fpm.conf /etc/nginx/nginx.conf").stdout.split() == \
        ["/etc/php/8.2/fpm/php-fpm.conf:0", "/etc/nginx/nginx.conf:0"]
    assert ssh(lab, web2, "grep -x ';process_control_timeout = 0' /etc/php/8.2/fpm/php-fpm.conf").returncode == 0
