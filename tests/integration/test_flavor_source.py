"""A host built from source (`opsctl lab up --flavor source`): php-fpm under /usr/local/php with
php-src's init script and a pool on /tmp/php-cgi.sock, nginx under /usr/local/nginx started by
hand with -c, and none of Debian's php-fpm or nginx files. Discovery finds both from what runs.
The hosts sit behind a bastion (`--bastion`), as such fleets often do: every connection of
check, harden, the playbook on its own and the rolling restart goes through it, and web1 is
reached as a user whose sudo needs a password."""

from __future__ import annotations

import json

import pytest

from tests import labtools
from tests.conftest import fresh_lab, opsctl
from tests.labtools import recap

pytestmark = pytest.mark.lab

POOL = "/usr/local/php/etc/php-fpm.d/www.conf"
VHOST = "/usr/local/nginx/conf/vhost/opsctl-lab.conf"
MASTER = "php-fpm 8.2 /usr/local/php/etc/php-fpm.conf"


@pytest.fixture(scope="module")
def src(lab_name: str):
    yield from fresh_lab(f"{lab_name}src"[:8], 2, "source", "--bastion")


def check(spec, *args: str) -> tuple[int, dict]:
    proc = opsctl("check", "--inventory", spec.name, "--limit", "web1", *args, "--format", "json", timeout=180)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def results(report: dict, check_id: str) -> dict[str, dict]:
    return {r["item"]: r for r in report["results"] if r["check"] == check_id}


def on_web1(spec, command: str, host: str = "web1") -> str:
    return labtools.ssh(spec, host, command, check=True).stdout


def test_the_host_has_no_debian_layout_left(src):
    gone = on_web1(src, "for f in /usr/sbin/php-fpm8.2 /etc/php/8.2/fpm/pool.d /etc/init.d/php8.2-fpm /etc/nginx "
                        "/usr/sbin/nginx; do test -e $f && echo $f; done; true")
    assert gone == ""
    assert "master process /usr/local/nginx/sbin/nginx -c /usr/local/nginx/conf/nginx.conf" in on_web1(src, "ps -eo args")


def test_check_sees_the_source_build_and_its_faults(src):
    rc, report = check(src)
    assert rc == 1
    backlog = results(report, "fpm-backlog-littles-law")["pool www"]
    assert backlog["status"] == "fail" and "listen.backlog = 65535" in backlog["observed"]
    listener = results(report, "listener-backlog-effective")["php-fpm /tmp/php-cgi.sock"]
    assert listener["status"] == "fail" and "pool www listen.backlog = 65535" in listener["observed"]
    pct = results(report, "fpm-process-control-timeout")[MASTER]
    assert pct["status"] == "fail" and "process_control_timeout = 0s" in pct["observed"]
    stop = results(report, "fpm-init-stop")["/etc/init.d/php-fpm"]
    assert stop["status"] == "fail" and "stop sends QUIT" in stop["observed"]
    assert results(report, "fpm-reload-signal")[MASTER]["status"] == "pass"
    # The status page answers on the pool's own socket, at the panel's path.
    assert results(report, "fpm-status-page")[""]["status"] == "pass"
    timeouts = [r for r in results(report, "location-timeouts").values() if r["status"] == "fail"]
    assert timeouts and "unix:/tmp/php-cgi.sock" in timeouts[0]["observed"] and "60s/60s/60s" in timeouts[0]["observed"]
    assert results(report, "config-readable")[""]["status"] == "pass"
    # The logs the running configuration writes, where it writes them: no rule rotates them.
    logs = results(report, "logs-rotated")
    for path in ("/usr/local/nginx/logs/access.log", "/usr/local/nginx/logs/error.log", "/usr/local/php/var/log/php-fpm.log"):
        assert logs[path]["status"] == "warn" and "no logrotate rule names it" in logs[path]["observed"], logs


def test_harden_plan_reads_the_same_masters(src):
    proc = opsctl("harden", "--inventory", src.name, "--limit", "web1", "--explain", "--format", "json", check=True)
    facts = json.loads(proc.stdout)[0]["facts"]
    assert facts["php_version"] == "8.2" and facts["php_fpm_bin"] == "/usr/local/php/sbin/php-fpm"
    master = facts["php_fpm_masters"][0]
    assert (master["conf"], master["pid_file"], master["scripts"]) == (
        "/usr/local/php/etc/php-fpm.conf", "/usr/local/php/var/run/php-fpm.pid", ["/etc/init.d/php-fpm"])
    assert master["pools"] == [{"name": "www", "label": "pool www", "listen": "/tmp/php-cgi.sock", "user": "www-data",
                               "file": POOL}]
    assert facts["nginx"] and facts["nginx_master"]["conf"] == "/usr/local/nginx/conf/nginx.conf"


def test_cron_restarts_of_the_source_services_are_found(src):
    # 00:00 Asia/Shanghai is 16:00 UTC, the lab hosts' clock.
    on_web1(src, "printf '%s\\n' '0 16 * * * root /etc/init.d/php-fpm restart' "
                 "'5 16 * * * root /usr/local/nginx/sbin/nginx -s stop' > /etc/cron.d/opsctl-test-src")
    try:
        _, report = check(src)
    finally:
        on_web1(src, "rm -f /etc/cron.d/opsctl-test-src")
    found = {r["observed"].split(":")[0]: r["status"] for r in report["results"]
             if r["check"] == "cron-restart-in-window" and "opsctl-test-src" in r["item"]}
    assert found == {"restart php-fpm at '0 16 * * *'": "fail", "kill nginx at '5 16 * * *'": "fail"}, found


def test_an_unreadable_configuration_is_a_failed_check_with_its_reason(src):
    on_web1(src, f"cp {POOL} /root/pool.orig && cp {VHOST} /root/vhost.orig && "
                 f"echo 'pm.max_children = = 5' >> {POOL} && sed -i 's/server_name _;/server_name _; no_such_directive on;/' {VHOST}")
    try:
        rc, report = check(src)
    finally:
        on_web1(src, f"cp /root/pool.orig {POOL} && cp /root/vhost.orig {VHOST}")
    assert rc == 1
    readable = results(report, "config-readable")[""]
    assert readable["status"] == "fail"
    observed = readable["observed"]
    assert f"{MASTER}: Unable to include {POOL}" in observed and "syntax error" in observed, observed
    assert 'unknown directive "no_such_directive"' in observed, observed
    assert "\n" not in observed


def test_harden_fixes_the_source_build_converges_and_a_rolling_restart_loses_nothing(src):
    explained = opsctl("harden", "--inventory", src.name, "--limit", "web1", "--explain", "--format", "json", check=True)
    backlog = json.loads(explained.stdout)[0]["plan"]["php_fpm.listen_backlog"]["value"]
    first = opsctl("harden", "--inventory", src.name, "--no-restart", timeout=1200)
    assert first.returncode == 0, first.stdout + first.stderr
    # Edited where they live: the pool file php-fpm reads, its [global], php-src's script
    # replaced by the graceful one, nginx's own conf and vhost/ directory.
    pool = on_web1(src, f"cat {POOL}")
    assert f"listen.backlog = {backlog}" in pool and "listen = /tmp/php-cgi.sock" in pool
    assert "process_control_timeout = 5s" in on_web1(src, "cat /usr/local/php/etc/php-fpm.conf")
    script = on_web1(src, "cat /etc/init.d/php-fpm")
    assert "managed by opsctl (role opsctl_lifecycle)" in script and "DAEMON=/usr/local/php/sbin/php-fpm" in script
    assert "fastcgi_read_timeout" in on_web1(src, "cat /usr/local/nginx/conf/vhost/opsctl-tuning.conf")
    assert "snippets/opsctl-server.conf" in on_web1(src, f"cat {VHOST}")
    # A restart applies the new listen.backlog; through the balancer, under order load.
    labtools.restart_under_load(src)
    labtools.assert_flavor_converged(src)
    # The roles on their own (ansible-playbook, as AWX runs them) find the same layout: no change.
    standalone = labtools.playbook(src, "opsctl.fleet.harden", "--limit", "web1")
    assert standalone.returncode == 0, standalone.stdout[-3000:]
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in recap(standalone.stdout).values()), standalone.stdout[-3000:]
    rc, report = check(src)
    assert rc == 0 and report["verdict"] == "ready", [r for r in report["results"] if r["status"] == "fail"]
    rotated = {item: r["observed"] for item, r in results(report, "logs-rotated").items()}
    assert "rotated by /etc/logrotate.d/nginx" in rotated["/usr/local/nginx/logs/access.log"], rotated
    assert "rotated by /etc/logrotate.d/php-fpm" in rotated["/usr/local/php/var/log/php-fpm.log"], rotated
    assert all("rotated by" in o for o in rotated.values()), rotated   # the slow logs harden set up too
    for host in ("web1", "web2"):
        live = on_web1(src, "ss -Hlx src /tmp/php-cgi.sock", host).split()
        assert live[3] == str(backlog), live   # Send-Q of a listener: the backlog it was created with
