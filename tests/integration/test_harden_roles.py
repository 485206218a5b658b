"""The opsctl_nginx and opsctl_php_fpm roles on real lab hosts: backlogs the kernel really applies,
status pages only for the host itself, load shed with a static 503, broken values refused with
the host still serving its previous config, and a second run that changes nothing."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import socket
import subprocess
import urllib.error
import urllib.request

import pytest

from tests.labtools import recap, ssh
from tests import labtools
from tests.conftest import REPO, fresh_lab

pytestmark = pytest.mark.lab

PLAYBOOK = REPO / "tests/integration/playbooks/harden-roles.yml"
# Distinctive values, so that a Send-Q equal to them cannot be a default.
OVERRIDES = {"php_fpm.listen_backlog": 37, "nginx.listen_backlog": 777, "nginx.limit_conn": 4}
POOL = "/etc/php/8.2/fpm/pool.d/www.conf"


@pytest.fixture(scope="module")
def hlab(lab_name: str):
    """A lab of this module's own: hardening it must not change the lab other modules share."""
    yield from fresh_lab(f"{lab_name}hr"[:8])


def host(spec, name: str):
    return next(h for h in spec.hosts if h.name == name)


def playbook(spec, *args: str, overrides: dict | None = None) -> subprocess.CompletedProcess:
    extra = json.dumps({"opsctl_capacity_overrides": OVERRIDES if overrides is None else overrides})
    return labtools.playbook(spec, str(PLAYBOOK), "-e", extra, *args, timeout=600)


def send_q(spec, name: str, match: str, kind: str = "t") -> int:
    """Send-Q of a listener (the accept queue limit the kernel applies)."""
    out = ssh(spec, name, f"ss -Hln{kind}").stdout
    for line in out.splitlines():
        fields = line.split()
        local = fields[4] if kind == "x" else fields[3]
        if local == match:
            return int(fields[3] if kind == "x" else fields[2])
    raise AssertionError(f"no listener {match} on {name}:\n{out}")


def fingerprint(spec, name: str, paths: str) -> str:
    out = ssh(spec, name, f"cat {paths} 2>/dev/null; cat /run/nginx.pid")
    return hashlib.sha256(out.stdout.encode()).hexdigest()


def get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@pytest.fixture(scope="module")
def applied(hlab):
    first = playbook(hlab)
    assert first.returncode == 0, first.stdout[-4000:]
    return hlab, first


def test_php_fpm_backlog_applies_after_a_graceful_restart(applied):
    lab, first = applied
    # USR2 keeps the listening socket: the role must say the new backlog is pending, not pretend.
    assert "pending restart on web1" in first.stdout
    sock = "/run/php/php8.2-fpm.sock"
    assert send_q(lab, "web1", sock, "x") != OVERRIDES["php_fpm.listen_backlog"]
    restart = ssh(lab, "web1", "/etc/init.d/php8.2-fpm stop && /etc/init.d/php8.2-fpm start")
    assert restart.returncode == 0, restart.stderr
    assert send_q(lab, "web1", sock, "x") == OVERRIDES["php_fpm.listen_backlog"]


def test_nginx_backlog_applies_on_reload(applied):
    lab, _ = applied
    for name in ("lb1", "web1"):
        assert send_q(lab, name, "0.0.0.0:80") == OVERRIDES["nginx.listen_backlog"]
        assert send_q(lab, name, "[::]:80") == OVERRIDES["nginx.listen_backlog"]


def test_pool_settings_are_live(applied):
    lab, _ = applied
    pool = ssh(lab, "web1", f"grep -E '^(pm|pm.max_children|request_terminate_timeout|listen.backlog) =' {POOL}").stdout
    assert "pm = static" in pool and "listen.backlog = 37" in pool and "request_terminate_timeout = 2" in pool
    children = int(pool.split("pm.max_children = ")[1].split()[0])
    workers = ssh(lab, "web1", "pgrep -c -f 'php-fpm: pool www$'").stdout.strip()
    assert int(workers) == children
    assert "process_control_timeout" not in ssh(lab, "web1", f"grep -v '^;' {POOL}").stdout


def test_status_pages_answer_only_on_the_host(applied):
    lab, _ = applied
    web1 = host(lab, "web1").address
    fcgi = "SCRIPT_NAME={p} SCRIPT_FILENAME={p} REQUEST_METHOD=GET cgi-fcgi -bind -connect 127.0.0.1:9001"
    assert "pool:" in ssh(lab, "web1", fcgi.format(p="/status")).stdout
    assert "pong" in ssh(lab, "web1", fcgi.format(p="/ping")).stdout
    local = ssh(lab, "web1", "python3 -c \"import urllib.request as u; "
                             "print(u.urlopen('http://127.0.0.1:8080/nginx_status').read().decode())\"")
    assert "Active connections" in local.stdout, local.stderr
    for port in (9001, 8080):
        with pytest.raises(OSError):
            socket.create_connection((web1, port), timeout=3).close()
    # Not reachable through the public sites either (nginx passes only *.php to php-fpm).
    assert get(f"http://{web1}/status")[0] == 404
    assert get(f"http://{host(lab, 'lb1').address}/nginx_status")[0] == 404


def test_excess_load_gets_the_static_503(applied):
    lab, _ = applied
    url = f"http://{host(lab, 'web1').address}/work.php?ms=1200"
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: get(url), range(12)))
    codes = [code for code, _ in answers]
    assert codes.count(200) >= 1 and codes.count(503) >= 12 - OVERRIDES["nginx.limit_conn"], codes
    assert all("very busy" in body for code, body in answers if code == 503)


def test_timeouts_and_upstream_health_checks(applied):
    lab, _ = applied
    dump = ssh(lab, "lb1", "nginx -T 2>/dev/null").stdout
    assert "proxy_read_timeout 2s;" in dump and "fastcgi_read_timeout 2s;" in dump
    servers = [line for line in dump.splitlines() if line.strip().startswith(f"server {host(lab, 'web1').address}")]
    assert servers and all("max_fails=3" in s and "fail_timeout=10s" in s for s in servers), servers


def test_invalid_nginx_value_keeps_the_previous_config(applied):
    lab, _ = applied
    files = "/etc/nginx/nginx.conf /etc/nginx/sites-available/default /etc/nginx/conf.d/*.conf"
    before = fingerprint(lab, "lb1", files)
    run = playbook(lab, "--limit", "lb1", "-e", "opsctl_nginx_worker_processes=lots")
    assert run.returncode != 0
    assert "lb1: nginx -t rejected" in run.stdout and '"worker_processes" directive invalid value' in run.stdout
    assert fingerprint(lab, "lb1", files) == before  # files restored, master not reloaded
    assert get(f"http://{host(lab, 'lb1').address}/health.php")[0] == 200


def test_value_of_the_wrong_type_is_refused_before_any_change(applied):
    lab, _ = applied
    before = fingerprint(lab, "lb1", "/etc/nginx/nginx.conf")
    run = playbook(lab, "--limit", "lb1", "-e", "opsctl_nginx_worker_connections=lots")
    assert run.returncode != 0
    assert "fatal: [lb1]" in run.stdout and "opsctl_nginx_worker_connections" in run.stdout
    assert fingerprint(lab, "lb1", "/etc/nginx/nginx.conf") == before


def test_invalid_php_fpm_value_keeps_the_previous_config(applied):
    lab, _ = applied
    master = ssh(lab, "web2", "cat /run/php/php8.2-fpm.pid").stdout
    before = ssh(lab, "web2", f"cat {POOL}").stdout
    run = playbook(lab, "--limit", "web2", "-e", "opsctl_php_fpm_pm_max_children=0")
    assert run.returncode != 0
    assert "web2: php-fpm -t rejected" in run.stdout and "pm.max_children must be a positive value" in run.stdout
    assert ssh(lab, "web2", f"cat {POOL}").stdout == before
    assert ssh(lab, "web2", "cat /run/php/php8.2-fpm.pid").stdout == master
    assert get(f"http://{host(lab, 'web2').address}/work.php?ms=1")[0] == 200


def test_check_mode_changes_nothing(applied):
    lab, _ = applied
    files = f"/etc/nginx/nginx.conf /etc/nginx/sites-available/default /etc/nginx/conf.d/*.conf {POOL}"
    before = {name: fingerprint(lab, name, files) for name in ("lb1", "web1")}
    changed = dict(OVERRIDES, **{"nginx.limit_conn": 9, "php_fpm.listen_backlog": 40})
    run = playbook(lab, "--check", "--diff", overrides=changed)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "+listen.backlog = 40" in run.stdout and "limit_conn opsctl_shed 9;" in run.stdout
    assert {name: fingerprint(lab, name, files) for name in ("lb1", "web1")} == before


def test_second_run_changes_nothing_and_nothing_is_pending(applied):
    lab, _ = applied
    for name in ("web1", "web2"):  # apply the pending backlog the way an operator would
        ssh(lab, name, "/etc/init.d/php8.2-fpm stop && /etc/init.d/php8.2-fpm start")
    second = playbook(lab)
    assert second.returncode == 0, second.stdout[-3000:]
    counts = recap(second.stdout)
    assert set(counts) == {h.name for h in lab.hosts}
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts
    assert "pending restart" not in second.stdout
