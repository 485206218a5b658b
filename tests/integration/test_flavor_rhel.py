"""The RHEL family (`opsctl lab up --flavor rhel`): php-fpm at /usr/sbin/php-fpm with
/etc/php-fpm.conf and /etc/php-fpm.d/www.conf (user apache), Remi's PHP 7.4 collection beside it
(/opt/remi/php74/root, /etc/opt/remi/php74, /var/opt/remi/php74), nginx as user nginx with its
server inside nginx.conf, conf.d/ at http level and default.d/ in the server, every service a
systemd unit and no init script at all. No systemd runs in a lab host: the units' own commands
start the services, `systemd-analyze verify` proves the unit files, and the drop-ins' ExecReload
lines are run by hand to prove the reload they describe."""

from __future__ import annotations

import json
import re

import pytest

from tests import labtools
from tests.conftest import fresh_lab, opsctl

pytestmark = pytest.mark.lab

BASE = "php-fpm 8.2 /etc/php-fpm.conf"
REMI = "php-fpm 8.2 /etc/opt/remi/php74/php-fpm.conf"
UNITS = ("php-fpm.service", "php74-php-fpm.service", "nginx.service")
CRON = "/etc/cron.d/opsctl-test-rhel"
# Inside the event window of the lab's profile (00:00-02:00 Asia/Shanghai, 16:00 UTC), and outside it.
PLANTED = "5 16 * * * root systemctl restart php-fpm\n0 4 * * * root /usr/bin/systemctl restart php74-php-fpm.service\n"


@pytest.fixture(scope="module")
def rhel(lab_name: str):
    lab = fresh_lab(f"{lab_name}rh"[:8], web=2, flavor="rhel")
    spec = next(lab)
    for host in spec.by_role("web"):
        labtools.ssh(spec, host, f"printf '{PLANTED}' > {CRON}", check=True)
    yield spec
    next(lab, None)   # lab down


def check(spec) -> tuple[int, dict]:
    proc = opsctl("check", "--inventory", spec.name, "--limit", "web1", "--format", "json", timeout=180)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def statuses(report: dict, check_id: str) -> dict[str, str]:
    return {r["item"]: r["status"] for r in report["results"] if r["check"] == check_id}


def on(spec, command: str, host: str = "web1") -> str:
    return labtools.ssh(spec, host, command, check=True).stdout


def verify_units(spec) -> str:
    """systemd-analyze verify of the three units inside the host, drop-ins applied: its output
    (warnings included), which must be empty."""
    proc = labtools.ssh(spec, "web1", "systemd-analyze verify " + " ".join(UNITS) + " 2>&1")
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.strip()


def test_check_finds_the_rhel_faults_of_both_masters(rhel):
    assert verify_units(rhel) == ""
    rc, report = check(rhel)
    assert rc == 1
    assert statuses(report, "fpm-systemd-stop") == {
        "/usr/lib/systemd/system/php-fpm.service": "fail", "/usr/lib/systemd/system/php74-php-fpm.service": "fail"}
    stop = next(r for r in report["results"] if r["check"] == "fpm-systemd-stop")
    assert "KillSignal=SIGTERM KillMode=control-group" in stop["observed"]
    assert statuses(report, "nginx-systemd-stop") == {"": "warn"}
    assert statuses(report, "fpm-process-control-timeout") == {BASE: "fail", REMI: "fail"}
    assert statuses(report, "fpm-backlog-littles-law") == {f"pool www ({BASE})": "fail", f"pool www ({REMI})": "fail"}
    assert statuses(report, "fpm-reload-signal") == {BASE: "pass", REMI: "pass"}
    assert "fail" in statuses(report, "location-timeouts").values()
    cron = {k.split(": ", 1)[1][:4]: v for k, v in statuses(report, "cron-restart-in-window").items() if CRON in k}
    assert cron == {"5 16": "fail", "0 4 ": "pass"}, cron
    assert statuses(report, "config-readable") == {"": "pass"}
    assert statuses(report, "fpm-init-stop") == {}   # no init script starts anything here


def test_harden_makes_every_unit_graceful_converges_and_restarts_without_loss(rhel):
    first = opsctl("harden", "--inventory", rhel.name, "--no-restart", timeout=1200)
    assert first.returncode == 0, first.stdout + first.stderr
    # Drop-ins, never an edit of the vendor unit; and they pass systemd's own verification.
    for unit in UNITS:
        assert "managed by opsctl (role opsctl_lifecycle)" in on(rhel, f"cat /etc/systemd/system/{unit}.d/opsctl-graceful.conf")
    assert "KillSignal=" not in on(rhel, "cat /usr/lib/systemd/system/php-fpm.service")
    assert verify_units(rhel) == ""
    assert on(rhel, "ls /etc/init.d/ | grep -c fpm || true").strip() == "0"
    # Each planted restart now reloads the service it named.
    cron = on(rhel, f"grep -v '^#' {CRON}")
    assert cron == "5 16 * * * root systemctl reload php-fpm\n0 4 * * * root /usr/bin/systemctl reload php74-php-fpm\n"
    # The server inside nginx.conf is managed as a site: load shedding and a backlog on its listens.
    conf = on(rhel, "cat /etc/nginx/nginx.conf")
    assert "include /etc/nginx/snippets/opsctl-server.conf;" in conf and re.search(r"listen\s+80 backlog=\d+;", conf)
    # The log directories are group-writable by apache: logrotate is told whom to rotate them as.
    assert "su root apache" in on(rhel, "cat /etc/logrotate.d/php74-php-fpm")
    labtools.restart_under_load(rhel)
    labtools.assert_flavor_converged(rhel)
    rc, report = check(rhel)
    assert rc == 0 and report["verdict"] == "ready", [r for r in report["results"] if r["status"] == "fail"]
    assert set(statuses(report, "fpm-systemd-stop").values()) == {"pass"}
    assert statuses(report, "nginx-systemd-stop") == {"": "pass"}


def test_the_drop_ins_own_reload_commands_reload_each_master(rhel):
    # What `systemctl reload` would run: the drop-in's ExecReload lines (after its reset), $MAINPID
    # the master's pid. The master its pid file names then has new workers only (a master that
    # daemonized re-executes and daemonizes again on USR2: the pid file follows it).
    for unit, pidfile in (("php-fpm.service", "/run/php-fpm/php-fpm.pid"),
                          ("php74-php-fpm.service", "/var/opt/remi/php74/run/php-fpm/php-fpm.pid")):
        dropin = on(rhel, f"cat /etc/systemd/system/{unit}.d/opsctl-graceful.conf")
        commands = dropin.split("ExecReload=\n", 1)[1]
        commands = [l.split("=", 1)[1] for l in commands.splitlines() if l.startswith("ExecReload=")]
        assert len(commands) == 2 and "--test" in commands[0] and commands[1] == "/bin/kill -USR2 $MAINPID"
        before = on(rhel, f"pid=$(cat {pidfile}); echo $pid; pgrep -P $pid | sort | tr '\\n' ' '")
        script = " && ".join(c.replace("$MAINPID", f"$(cat {pidfile})") for c in commands)
        on(rhel, f"{script} && sleep 2")
        after = on(rhel, f"pid=$(cat {pidfile}); echo $pid; pgrep -P $pid | sort | tr '\\n' ' '")
        old, new = before.split("\n", 1)[1].split(), after.split("\n", 1)[1].split()
        assert new and not set(old) & set(new), (before, after)
