"""`opsctl check` against real lab hosts: stock findings, planted faults, unreachable hosts."""

from __future__ import annotations

import json
import re
import shutil
import sys
import subprocess
import xml.etree.ElementTree as ET
import os
from pathlib import Path

import pytest
import yaml

from opsctl.paths import collections_env
from tests import labtools
from tests.conftest import opsctl

pytestmark = pytest.mark.lab


def ssh(spec, host, command: str) -> subprocess.CompletedProcess:
    return labtools.ssh(spec, host, command, check=True)


def check_json(*args: str) -> tuple[int, dict]:
    proc = opsctl("check", *args, "--format", "json", timeout=180)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def by_host(report: dict, check: str, status: str | None = None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in report["results"]:
        if r["check"] == check and (status is None or r["status"] == status):
            out.setdefault(r["host"], []).append(r)
    return out


@pytest.fixture(scope="module")
def stock(lab):
    return check_json("--inventory", lab.name)


def test_stock_lab_is_not_ready_with_numbers(stock, lab):
    rc, report = stock
    assert rc == 1 and report["version"] == 2 and report["verdict"] == "not ready"
    assert {h["host"]: h["status"] for h in report["hosts"]} == {h.name: "ok" for h in lab.hosts}
    webs = {h.name for h in lab.hosts if h.role == "web"}
    # php-fpm 8.2's listen.backlog = -1 follows somaxconn (4096): far longer than 100 qps x 4.7 s.
    backlog = by_host(report, "fpm-backlog-littles-law", "fail")
    assert set(backlog) == webs
    assert "4096" in backlog["web1"][0]["observed"] and "470" in backlog["web1"][0]["expected"]
    # nginx's default 60 s fastcgi/proxy timeouts vs the lab's 5 s client timeout, on every host.
    timeouts = by_host(report, "location-timeouts", "fail")
    assert set(timeouts) == {h.name for h in lab.hosts}
    assert "60s/60s/60s" in timeouts["web1"][0]["observed"] and "5.0s" in timeouts["web1"][0]["expected"]
    # Debian's init script stops with QUIT, but process_control_timeout = 0 makes it a SIGTERM.
    for check in ("fpm-process-control-timeout", "fpm-init-stop"):
        failed = by_host(report, check, "fail")
        assert set(failed) == webs, check
        assert "0s" in failed["web1"][0]["observed"] and ">= 5s" in failed["web1"][0]["expected"]
    capacity = by_host(report, "pool-capacity", "fail")["web1"][0]
    assert "5 / 0.1s = 50 qps" in capacity["observed"] and "100" in capacity["observed"]
    # lb1 has no running php-fpm: no php-fpm findings there.
    assert not [r for r in report["results"] if r["host"] == "lb1" and r["check"].startswith("fpm-")]
    for r in report["results"]:
        if r["status"] in ("fail", "warn"):
            assert r["observed"] and r["expected"] and r["remediation"], r
    # The stock rotation (cron.daily 06:25 UTC) is clear of the 00:00 Asia/Shanghai window.
    assert set(by_host(report, "rotation-in-window", "pass")) == {h.name for h in lab.hosts}


def _group_key(finding: dict) -> tuple:
    return tuple(finding[k] for k in ("check", "item", "status", "expected", "remediation"))


def test_the_table_groups_findings_across_hosts(stock, lab):
    """Before any fault is planted: each finding of the stock lab is one line for all its hosts."""
    _, report = stock
    # The JSON's groups hold exactly the hosts of the per-host results they group.
    for group in report["groups"]:
        hosts = [r["host"] for r in report["results"] if _group_key(r) == _group_key(group)]
        assert sorted(hosts) == sorted(group["hosts"]) and group["host_count"] == len(hosts), group
    proc = opsctl("check", "--inventory", lab.name, timeout=180)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()     # piped: plain lines, one per group, the verdict last
    assert lines[-1].startswith("NOT READY: 3 hosts (0 unreachable or failed)")
    assert len(lines) == len([g for g in report["groups"] if g["status"] != "pass"]) + 1, proc.stdout
    assert not any(box in proc.stdout for box in "│┃━")
    backlog = next(line for line in lines if line.startswith("FAIL fpm-backlog-littles-law [pool www]  "))
    assert "  2 hosts web[1-2]  observed listen.backlog = -1 (follows somaxconn): 4096" in backlog, backlog
    assert "  expected <= 470" in backlog and "  fix: opsctl harden --tags php_fpm" in backlog
    assert any(line.startswith("WARN clock-sync  3 hosts lb1, web[1-2]  ") for line in lines), lines
    # On an 80-column terminal: the table, no line wider than the terminal.
    term = opsctl("check", "--inventory", lab.name, env={"TTY_COMPATIBLE": "1", "COLUMNS": "80"}, timeout=180)
    shown = re.sub(r"\x1b\[[0-9;]*m", "", term.stdout).splitlines()
    assert all(len(line) <= 80 for line in shown) and len(shown) <= 60, term.stdout
    assert any(line.startswith("FAIL   fpm-backlog-littles-law") and "2 web[1-2]" in line for line in shown), shown
    # --hosts: that host's own results in full; the verdict still the fleet's.
    one = opsctl("check", "--inventory", lab.name, "--hosts", "web2", timeout=180)
    assert one.returncode == 1 and one.stdout.splitlines()[-1].startswith("NOT READY: 3 hosts")
    assert {line.split()[1] for line in one.stdout.splitlines()[:-1]} == {"web2"}
    assert len(one.stdout.splitlines()) - 1 == len([r for r in report["results"]
                                                    if r["host"] == "web2" and r["status"] != "pass"])


def _plant(lab, web1):
    www = "/etc/php/8.2/fpm/pool.d/www.conf"
    site = "/etc/nginx/sites-enabled/default"
    ssh(lab, web1, f"cp {www} /root/www.conf.orig && cp $(readlink -f {site}) /root/site.orig && "
                   f"echo 'listen.backlog = 65535' >> {www} && "
                   "sysctl -qw net.core.somaxconn=64 && "
                   # The event starts 00:00 Asia/Shanghai = 16:00 UTC (lab hosts run UTC).
                   "echo '0 16 * * * root /etc/init.d/php8.2-fpm restart' > /etc/cron.d/opsctl-test-restart && "
                   "echo '10 16 * * * root /usr/sbin/logrotate /etc/logrotate.conf' > /etc/cron.d/opsctl-logrotate && "
                   f"sed -i 's|fastcgi_pass|fastcgi_read_timeout 30s; fastcgi_pass|' $(readlink -f {site}) && nginx -t -q")


def _restore(lab, web1):
    ssh(lab, web1, "cp /root/www.conf.orig /etc/php/8.2/fpm/pool.d/www.conf && "
                   "cp /root/site.orig $(readlink -f /etc/nginx/sites-enabled/default) && "
                   "rm -f /etc/cron.d/opsctl-test-restart /etc/cron.d/opsctl-logrotate && "
                   "sysctl -qw net.core.somaxconn=4096")


@pytest.fixture(scope="module")
def planted(lab):
    web1 = next(h for h in lab.hosts if h.name == "web1")
    _plant(lab, web1)
    try:
        yield check_json("--inventory", lab.name), check_json(
            "--inventory", lab.name, "--limit", "web1", "--event", "2026-11-26T12:00+08:00", "--duration", "2h")
    finally:
        _restore(lab, web1)


def test_planted_faults_are_reported_on_that_host_only(planted):
    (rc, report), _ = planted
    assert rc == 1

    def only_web1(check: str) -> list[dict]:
        failed = by_host(report, check, "fail")
        assert set(failed) == {"web1"}, (check, failed)
        return failed["web1"]

    listeners = {r["item"]: r for r in only_web1("listener-backlog-effective")}
    fpm = next(r for item, r in listeners.items() if item.startswith("php-fpm"))
    assert "listen.backlog = 65535" in fpm["observed"] and "somaxconn = 64" in fpm["observed"]
    nginx = next(r for item, r in listeners.items() if item.startswith("nginx"))
    assert "backlog 511" in nginx["observed"] and "caps it at 64" in nginx["observed"]
    cron = only_web1("cron-restart-in-window")[0]
    assert "restart php-fpm at '0 16 * * *'" in cron["observed"] and "00:00 Asia/Shanghai" in cron["observed"]
    rotation = only_web1("rotation-in-window")[0]
    assert "'10 16 * * *'" in rotation["observed"] and "00:10 Asia/Shanghai" in rotation["observed"]
    # The planted 30 s fastcgi_read_timeout shows on web1; web2 keeps nginx's 60 s default.
    read = {h: rs[0]["observed"] for h, rs in by_host(report, "location-timeouts", "fail").items()}
    assert "60s/60s/30s" in read["web1"] and "60s/60s/60s" in read["web2"]
    backlog = {h: rs[0]["observed"] for h, rs in by_host(report, "fpm-backlog-littles-law").items()}
    assert "listen.backlog = 65535" in backlog["web1"] and "listen.backlog = -1" in backlog["web2"]


def test_window_decides_rotation_and_cron_findings(planted):
    _, (rc, noon) = planted
    # Another window (12:00 Asia/Shanghai = 04:00 UTC): the 16:00/16:10 UTC jobs are clear of it.
    assert {h["host"] for h in noon["hosts"]} == {"web1"}
    assert by_host(noon, "rotation-in-window", "pass").keys() == {"web1"}
    assert by_host(noon, "cron-restart-in-window", "pass").keys() == {"web1"}
    assert by_host(noon, "cron-restart", "warn").keys() == {"web1"}  # still a restart from cron
    assert noon["hosts"][0]["window"].startswith("2026-11-26 12:00 Asia/Shanghai")


def test_unreachable_host_and_changed_host_key_are_errors(lab, tmp_path: Path):
    inv = tmp_path / "inventory"
    shutil.copytree(lab.inventory_dir, inv)
    known = tmp_path / "known_hosts"
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    web2 = next(h for h in lab.hosts if h.name == "web2")
    lines = [f"{web2.address} {other.with_suffix('.pub').read_text().split(' ', 2)[0]} "
             f"{other.with_suffix('.pub').read_text().split(' ', 2)[1]}\n"
             if line.startswith(web2.address + " ") else line
             for line in lab.known_hosts.read_text().splitlines(keepends=True)]
    known.write_text("".join(lines))
    hosts = yaml.safe_load((inv / "hosts.yml").read_text())
    hosts["all"]["vars"]["opsctl_known_hosts"] = str(known)
    hosts["all"]["vars"]["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes"
    ghost = lab.subnet.rsplit(".", 1)[0] + ".99"  # inside the lab's own /24, nothing there
    hosts["all"]["children"]["web"]["hosts"]["ghost"] = {"ansible_host": ghost}
    (inv / "hosts.yml").write_text(yaml.safe_dump(hosts))
    rc, report = check_json("--inventory", str(inv))
    assert rc == 1
    status = {h["host"]: h for h in report["hosts"]}
    assert status["ghost"]["status"] == "error" and status["ghost"]["error"].startswith("unreachable")
    assert status["web2"]["status"] == "error" and status["web2"]["error"].startswith("host key mismatch")
    assert status["web1"]["status"] == status["lb1"]["status"] == "ok"
    assert {r["host"] for r in report["results"]} == {"web1", "lb1"}
    # Grouped by error, each without its host's address.
    down = {g["hosts_compact"]: g["observed"] for g in report["groups"] if g["kind"] == "host"}
    assert set(down) == {"ghost", "web2"} and down["ghost"].startswith("unreachable") and ghost not in down["ghost"]
    assert down["web2"].startswith("host key mismatch") and "<address>" in down["web2"]


def test_junit_and_markdown(lab):
    proc = opsctl("check", "--inventory", lab.name, "--limit", "web1", "--format", "junit", timeout=120)
    assert proc.returncode == 1
    suites = ET.fromstring(proc.stdout.split("?>", 1)[1])
    assert suites[0].get("tests") == "0" and "FAIL fpm-process-control-timeout" in suites[0].find("system-out").text
    cases = suites.findall("./testsuite[@name='web1']/testcase")
    assert len(cases) > 20, proc.stdout[:2000]
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    # One result per php-fpm master, named by its version and configuration.
    assert "fpm-process-control-timeout [php-fpm 8.2 /etc/php/8.2/fpm/php-fpm.conf]" in failed
    proc = opsctl("check", "--inventory", lab.name, "--limit", "web1", "--format", "markdown", timeout=120)
    assert proc.returncode == 1 and "| fail | web1 | fpm-process-control-timeout php-fpm 8.2 /etc/php/8.2/fpm/php-fpm.conf |" in proc.stdout
    assert proc.stdout.index("## Findings grouped across hosts") < proc.stdout.index("## Findings\n")
    assert "| fail | fpm-process-control-timeout php-fpm 8.2 /etc/php/8.2/fpm/php-fpm.conf | 1: web1 |" in proc.stdout


def test_user_catalog_and_fail_on(lab, tmp_path: Path):
    catalog = tmp_path / "mine.yml"
    catalog.write_text(yaml.safe_dump({"checks": [{
        "id": "nginx-workers-auto", "title": "nginx runs one worker per CPU", "severity": "warn",
        "failure_mode": "F6", "facts": ["nginx.worker_processes"], "when": "facts.nginx.present",
        "rule": "facts.nginx.worker_processes == 'auto'", "observed": "{{ facts.nginx.worker_processes }}",
        "expected": "auto", "remediation": "opsctl harden --tags nginx"}]}))
    rc, report = check_json("--inventory", lab.name, "--limit", "lb1", "--catalog", str(catalog))
    mine = by_host(report, "nginx-workers-auto")
    assert mine["lb1"][0]["status"] == "pass" and mine["lb1"][0]["observed"] == "auto"
    bad = tmp_path / "bad.yml"
    bad.write_text("checks:\n  - id: x\n    title: t\n")
    proc = opsctl("check", "--inventory", lab.name, "--catalog", str(bad))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "check x" in proc.stderr
    proc = opsctl("check", "--inventory", lab.name, "--event", "tomorrow")
    assert proc.returncode == 2 and "--event" in proc.stderr


def test_preflight_playbook_gives_the_same_verdicts(lab, stock):
    _, report = stock
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(lab.inventory_dir),
                           "opsctl.fleet.preflight"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **collections_env()))
    assert proc.returncode != 0
    recap = {line.split()[0]: line for line in proc.stdout.splitlines() if " : ok=" in line}
    assert set(recap) == {h.name for h in lab.hosts}
    assert all("changed=0" in line and "failed=1" in line for line in recap.values()), recap
    for host in ("web2", "lb1"):  # web1 may still carry the planted faults here
        failing = sorted({r["check"] for r in report["results"] if r["host"] == host and r["status"] == "fail"})
        line = next(l for l in proc.stdout.splitlines() if f"fatal: [{host}]" in l)
        assert all(check in line for check in failing), (host, failing, line)
