"""opsctl reload php-fpm --rolling on the lab: no failed request, every host really reloaded,
and a failure stops the rollout where it happened with nothing else left drained."""

import os
import signal
import threading
import time

import pytest

from opsctl.lab import system
from opsctl.lab.load import BackgroundLoad
from tests.labtools import ssh
from tests.conftest import opsctl

pytestmark = pytest.mark.lab


def workers(spec, host) -> set[str]:
    return set(ssh(spec, host, "pgrep -P $(cat /run/php/php8.2-fpm.pid)").stdout.split())


def upstream(spec) -> str:
    lb = spec.by_role("lb")[0]
    return (spec.host_dir(lb) / "upper/etc/nginx/sites-available/default").read_text()


def drained(spec) -> set[str]:
    text = upstream(spec)
    return {h.name for h in spec.by_role("web")
            if any(h.address in line and " down" in line for line in text.splitlines())}


def test_rollout_under_load_loses_nothing_and_reloads_every_host(lab):
    lb = lab.by_role("lb")[0]
    before = {h.name: workers(lab, h) for h in lab.by_role("web")}
    with BackgroundLoad(lb.address, "/work.php?ms=150", seconds=240, concurrency=8) as load:
        proc = opsctl("reload", "php-fpm", "--rolling", "--inventory", lab.name)
        load.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = load.result
    assert result.sent > 50 and result.non_2xx == 0 and result.errors == 0, result
    for host in lab.by_role("web"):
        after = workers(lab, host)
        assert after and not (after & before[host.name]), (host.name, before[host.name], after)
        assert f"{host.name} │ reloaded" in proc.stdout
    assert drained(lab) == set()


def test_config_error_on_second_host_stops_the_rollout_there(lab):
    web1, web2 = lab.by_role("web")[:2]
    pool = "/etc/php/8.2/fpm/pool.d/www.conf"
    assert ssh(lab, web2, f"cp -p {pool} /root/www.conf.good && echo 'pm.max_children = lots' >> {pool}").returncode == 0
    try:
        before1, before2 = workers(lab, web1), workers(lab, web2)
        proc = opsctl("reload", "php-fpm", "--rolling", "--inventory", lab.name)
        assert proc.returncode == 1
        reason = proc.stderr.strip().splitlines()[-1]
        assert "web2 failed at step test" in reason and "--resume-from web2" in reason
        assert "config test failed" in reason and "pm.max_children" in reason
        assert "not taken out of rotation" in reason
        assert "Traceback" not in proc.stderr
        assert not (workers(lab, web1) & before1)       # web1 reloaded
        assert workers(lab, web2) == before2            # web2 untouched: same workers
        assert drained(lab) == set()                    # nothing left out of rotation
    finally:
        ssh(lab, web2, f"cp -p /root/www.conf.good {pool}")


def kill_sshd(spec, host) -> None:
    """Every sshd process of the host, listener and sessions: the host is gone for SSH."""
    for pid in system.netns_pids(host.netns):
        try:
            if open(f"/proc/{pid}/comm").read().strip() == "sshd":
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_sshd_killed_mid_rollout_names_the_host_and_leaves_only_it_drained(lab):
    web2 = lab.by_role("web")[1]
    stop = threading.Event()

    def killer() -> None:
        deadline = time.monotonic() + 180
        while not stop.is_set() and time.monotonic() < deadline:
            if "web2" in drained(lab):
                kill_sshd(lab, web2)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        proc = opsctl("reload", "php-fpm", "--rolling", "--inventory", lab.name)
    finally:
        stop.set()
        thread.join()
    try:
        assert proc.returncode == 1, proc.stdout + proc.stderr
        reason = proc.stderr.strip().splitlines()[-1]
        assert "web2 failed at step" in reason and "web2 is left drained" in reason
        assert drained(lab) == {"web2"}
    finally:
        opsctl("lab", "up", "--name", lab.name, check=True)   # sshd back
        resumed = opsctl("reload", "php-fpm", "--rolling", "--inventory", lab.name, "--resume-from", "web2")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert drained(lab) == set()
