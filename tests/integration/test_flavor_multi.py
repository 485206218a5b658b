"""Three php-fpm masters and four pools on each web host (`opsctl lab up --flavor multi`): Debian's
php8.2-fpm with its www pool and a second pool api on 127.0.0.1:9100, Debian's package of a second
version (php7.4-fpm, its www pool on /run/php/php7.4-fpm.sock), and a panel's PHP under
/www/server/php/74 (its www pool inside php-fpm.conf, on /tmp/php-cgi-74.sock, started by
php-src's init script as php-fpm-74). The machine has one PHP release, so the other binaries are
copies of it: what differs is the name, prefix, configuration, pid file and script, which is what
opsctl must tell apart. Every pool is checked and sized; the model splits the host between them."""

from __future__ import annotations

import json
import re

import pytest

from tests import labtools
from tests.conftest import fresh_lab, opsctl

pytestmark = pytest.mark.lab

DEB = "php-fpm 8.2 /etc/php/8.2/fpm/php-fpm.conf"
DEB74 = "php-fpm 7.4 /etc/php/7.4/fpm/php-fpm.conf"   # the version Debian's binary name says
PANEL = "php-fpm 8.2 /www/server/php/74/etc/php-fpm.conf"
POOLS = (f"pool api ({DEB})", f"pool www ({DEB})", f"pool www ({DEB74})", f"pool www ({PANEL})")
PANEL_CONF = "/www/server/php/74/etc/php-fpm.conf"


@pytest.fixture(scope="module")
def multi(lab_name: str):
    yield from fresh_lab(f"{lab_name}mul"[:8], web=2, flavor="multi")


def check(spec) -> tuple[int, dict]:
    proc = opsctl("check", "--inventory", spec.name, "--limit", "web1", "--format", "json", timeout=180)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def results(report: dict, check_id: str) -> dict[str, dict]:
    return {r["item"]: r for r in report["results"] if r["check"] == check_id}


def on(spec, command: str, host: str = "web1") -> str:
    return labtools.ssh(spec, host, command, check=True).stdout


def explain(spec) -> dict:
    proc = opsctl("harden", "--inventory", spec.name, "--limit", "web1", "--explain", "--format", "json", check=True)
    return json.loads(proc.stdout)[0]["plan"]


def test_check_finds_every_pool_of_both_masters_and_their_faults(multi):
    rc, report = check(multi)
    assert rc == 1
    backlog = results(report, "fpm-backlog-littles-law")
    assert {k: v["status"] for k, v in backlog.items()} == dict.fromkeys(POOLS, "fail"), backlog
    # Each pool is judged on its share of the host's peak (four pools, no weights: a quarter each).
    assert "25.0 qps (this pool's share of 100.0)" in backlog[POOLS[0]]["expected"]
    assert {k: v["status"] for k, v in results(report, "fpm-process-control-timeout").items()} == {
        DEB: "fail", DEB74: "fail", PANEL: "fail"}
    stops = {k: v["status"] for k, v in results(report, "fpm-init-stop").items()}
    assert stops == dict.fromkeys(("/etc/init.d/php8.2-fpm", "/etc/init.d/php7.4-fpm", "/etc/init.d/php-fpm-74"), "fail")
    assert set(results(report, "pool-capacity")) == set(POOLS)


def test_the_model_splits_the_host_between_the_pools_and_explain_says_how(multi):
    plan = explain(multi)
    split = plan["php_fpm.pools"]
    assert list(split["value"]) == list(POOLS)
    total = plan["php_fpm.pm_max_children"]["value"]
    assert sum(p["pm_max_children"] for p in split["value"].values()) == total
    assert "4 running pool(s) split the host's" in split["reason"] and "MB left for php-fpm" in split["reason"]
    assert all(p["reason"].startswith("weight 1/4 of 100 qps") for p in split["value"].values())
    # What --explain prints: the rule, then each pool with its own arithmetic.
    table = opsctl("harden", "--inventory", multi.name, "--limit", "web1", "--explain", check=True,
                   env={"COLUMNS": "240"}).stdout
    for label in POOLS:
        assert re.search(re.escape(label) + r"\s+│ \d+ workers, backlog \d+, 25 qps", table), table


def test_harden_sizes_every_pool_converges_and_a_rolling_restart_loses_nothing(multi):
    split = explain(multi)["php_fpm.pools"]["value"]
    # Not restarted by harden: the restart under load below is the one that applies the backlogs.
    first = opsctl("harden", "--inventory", multi.name, "--no-restart", timeout=1200)
    assert first.returncode == 0, first.stdout + first.stderr
    api = on(multi, "cat /etc/php/8.2/fpm/pool.d/api.conf")
    panel = on(multi, f"cat {PANEL_CONF}")
    assert f"pm.max_children = {split[POOLS[0]]['pm_max_children']}" in api
    assert f"listen.backlog = {split[POOLS[0]]['listen_backlog']}" in api
    assert f"pm.max_children = {split[POOLS[3]]['pm_max_children']}" in panel and "process_control_timeout = 5s" in panel
    deb74 = on(multi, "cat /etc/php/7.4/fpm/pool.d/www.conf")
    assert f"pm.max_children = {split[POOLS[2]]['pm_max_children']}" in deb74
    # A status listener of its own for each pool, so the check reads all four.
    pools = api + on(multi, "cat /etc/php/8.2/fpm/pool.d/www.conf") + deb74 + panel
    listeners = sorted(re.findall(r"pm.status_listen = (\S+)", pools))
    assert listeners == ["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004"], listeners
    for script in ("php-fpm-74", "php7.4-fpm"):
        assert "managed by opsctl (role opsctl_lifecycle)" in on(multi, f"cat /etc/init.d/{script}")
    # Every master restarts (new backlogs), one host at a time, under order load through the balancer.
    labtools.restart_under_load(multi)
    labtools.assert_flavor_converged(multi)
    rc, report = check(multi)
    assert rc == 0 and report["verdict"] == "ready", [r for r in report["results"] if r["status"] == "fail"]
    assert {k: v["status"] for k, v in results(report, "fpm-status-figures").items()} == dict.fromkeys(POOLS, "pass")
    rotated = results(report, "logs-rotated")
    assert "rotated by /etc/logrotate.d/php-fpm-74" in rotated["/www/server/php/74/var/log/php-fpm.log"]["observed"]
    assert "rotated by /etc/logrotate.d/php7.4-fpm" in rotated["/var/log/php7.4-fpm.log"]["observed"]
    live = on(multi, "ss -Hlx src /tmp/php-cgi-74.sock").split()
    assert live[3] == str(split[POOLS[3]]["listen_backlog"]), live
    live = on(multi, "ss -Hlx src /run/php/php7.4-fpm.sock").split()
    assert live[3] == str(split[POOLS[2]]["listen_backlog"]), live
