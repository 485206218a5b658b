"""`opsctl harden` on a real lab: refused overrides change nothing, running values equal what
--explain printed, real processes get the nofile limit, and a second run changes nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from ansible_collections.opsctl.fleet.plugins.plugin_utils import access_log
from opsctl.lab import remote
from opsctl.lab.load import BackgroundLoad, run_load
from tests.labtools import playbook, recap, ssh
from tests.conftest import opsctl

pytestmark = pytest.mark.lab

ACCESS_LOG = "/var/log/nginx/access.log"
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


def _new_log_lines(lab, sizes: dict[str, int]) -> dict[str, list[str]]:
    time.sleep(1)   # the buffers reach the file within flush=250ms
    return {host: on_host(lab, host, f"tail -c +{size + 1} {ACCESS_LOG}").splitlines() for host, size in sizes.items()}


def test_access_logs_hold_every_field_the_analysis_needs(lab, hardened):
    """Requests through the balancer: every new line on the lb and the web hosts is opsctl_timing
    with every field, the status counts are the load tool's, no query string is written, each
    log keeps its path, `opsctl watch` still counts statuses, and the reader runs on a host as is."""
    hosts = [h.name for h in lab.hosts]
    sizes = {h: int(on_host(lab, h, f"stat -c %s {ACCESS_LOG}")) for h in hosts}
    lb = lab.by_role("lb")[0].address
    ok = run_load(lb, "/health.php?token=s3cr3t", seconds=20, concurrency=4, max_requests=120)
    missing = run_load(lb, "/nope.html?q=1", seconds=20, concurrency=2, max_requests=30)
    assert (ok.ok, ok.errors, missing.non_2xx, missing.errors) == (120, 0, 30, 0), (ok, missing)
    new = _new_log_lines(lab, sizes)
    timing, webs = access_log.opsctl_timing(), {h.address: h.name for h in lab.by_role("web")}
    entries = {h: [timing.parse(line) for line in lines] for h, lines in new.items()}
    assert all(None not in found for found in entries.values()), new     # every line is opsctl_timing
    assert not any("s3cr3t" in line or "q=1" in line for lines in new.values() for line in lines)
    on_lb = entries["lb1"]
    assert Counter(e.status for e in on_lb) == {200: 120, 404: 30}
    assert {e.path for e in on_lb} == {"/health.php", "/nope.html"} and {e.method for e in on_lb} == {"GET"}
    assert all(e.upstream_addr[0].split(":")[0] in webs and e.upstream_status == (e.status,) and e.server == "_"
               and None not in e.upstream_connect_time + e.upstream_header_time + e.upstream_response_time
               and e.request_time is not None and e.host == lb and e.body_bytes is not None for e in on_lb)
    on_webs = [e for h in webs.values() for e in entries[h]]
    assert Counter(e.status for e in on_webs) == {200: 120, 404: 30}
    assert all(e.upstream_addr == ("unix:/run/php/php8.2-fpm.sock",) and None not in e.upstream_response_time
               for e in on_webs if e.status == 200)
    assert all(e.upstream_addr == () for e in on_webs if e.status == 404)   # nginx's own 404: no upstream tried
    for host in hosts:
        # Each switched line keeps the path of the line it replaced, written after the mark.
        conf = on_host(lab, host, "grep -h '^[[:space:]]*access_log' /etc/nginx/nginx.conf /etc/nginx/sites-enabled/*")
        switched = [line.strip() for line in conf.splitlines()]
        assert switched and all(line.split()[1] == line.split("was: access_log ")[1].split(";")[0].split()[0]
                                and " opsctl_timing buffer=32k flush=250ms;" in line for line in switched), switched
    # opsctl watch (whose sampler finds the status after the quoted request) counts every line.
    with BackgroundLoad(lb, "/work.php?ms=10", seconds=30, concurrency=2) as load:
        time.sleep(1)
        watched = json.loads(opsctl("watch", "--inventory", lab.name, "--once", "--format", "json", check=True).stdout)
        load.stop()
    statuses = next(h for h in watched["hosts"] if h["host"] == "lb1")["figures"]["statuses"]
    assert statuses.get("2xx", 0) > 0 and set(statuses) == {"2xx"}, statuses
    # The reader is stdlib only: it runs on a host as it is (the later on-host aggregation).
    time.sleep(1.5)
    web1_lines = on_host(lab, "web1", f"cat {ACCESS_LOG}").splitlines()
    source = Path(access_log.__file__).read_text() + (
        "\nimport collections, itertools, json\n"
        f"lines = itertools.islice(open({ACCESS_LOG!r}), {len(web1_lines)})\n"
        "print(json.dumps(collections.Counter(e.status for e in Reader().entries(lines))))\n")
    on_web1 = subprocess.run(remote.ssh_argv(lab, "web1", "python3 -"), input=source, capture_output=True,
                             text=True, timeout=60, check=True).stdout
    here = Counter(e.status for e in access_log.Reader().entries(web1_lines))
    assert json.loads(on_web1) == {str(status): n for status, n in here.items()} and here[200] >= 60


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
