"""`opsctl watch` against a real lab: one sample of every host agrees with what ss and
/proc/net/netstat say on the host; a burst through the balancer shows up as requests per
second; the full screen, driven in tmux, shows hosts and figures; a host whose sshd dies is
shown lost within two intervals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from opsctl.lab import system
from opsctl.lab.load import BackgroundLoad
from tests import labtools
from tests.conftest import fresh_lab, opsctl

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def wch():
    yield from fresh_lab("wch", web=2)


def once(spec, *args: str) -> tuple[int, dict]:
    proc = opsctl("watch", "--inventory", spec.name, "--once", "--format", "json", *args, timeout=90)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def ss_listeners(spec, host: str) -> dict[str, tuple[int, int]]:
    """Local address -> (Recv-Q, Send-Q) of every listening TCP and unix socket, as ss says."""
    out = labtools.ssh(spec, host, "ss -Hlntx", check=True).stdout
    return {f[4]: (int(f[2]), int(f[3])) for f in (line.split() for line in out.splitlines()) if len(f) >= 5}


def netstat(spec, host: str) -> dict[str, int]:
    lines = [line.split() for line in labtools.ssh(spec, host, "cat /proc/net/netstat", check=True).stdout.splitlines()
             if line.startswith("TcpExt:")]
    return {k: int(v) for k, v in zip(lines[0][1:], lines[1][1:])}


def test_once_gives_every_host_figures_that_match_ss_and_netstat(wch):
    rc, report = once(wch)
    assert rc == 0
    by_host = {h["host"]: h for h in report["hosts"]}
    assert set(by_host) == {h.name for h in wch.hosts}
    for name, entry in by_host.items():
        assert entry["state"] == "ok", entry
        figures = entry["figures"]
        listeners = {item["address"]: item for item in figures["listeners"]}
        assert "0.0.0.0:80" in listeners and listeners["0.0.0.0:80"]["kind"] == "nginx"
        seen = ss_listeners(wch, name)
        for address, item in listeners.items():
            # The accept queue's limit is the socket's backlog: ss's Send-Q, exactly; an idle
            # lab's queue is empty at both moments.
            assert seen[address] == (item["queue"], item["limit"]), (name, address)
        counters = netstat(wch, name)
        assert counters["ListenOverflows"] == entry["counters"]["listen_overflows"]
        assert counters["ListenDrops"] == entry["counters"]["listen_drops"]
        assert figures["overflows_ps"] == 0 and figures["cpu_ms"] is not None
        # A stock host has no php-fpm status page: its pool figures are unknown ("-"), not 0.
        assert figures["fpm_active"] is None and figures["fpm_max_children"] is None
    for web in wch.by_role("web"):
        kinds = {item["kind"] for item in by_host[web.name]["figures"]["listeners"]}
        assert kinds == {"nginx", "php-fpm"}
    assert report["fleet"]["hosts"] == len(wch.hosts) and report["fleet"]["lost"] == 0


STATUS = ("printf 'pm.status_path = /fpm-status\\npm.status_listen = 127.0.0.1:9001\\n' "
          ">> /etc/php/8.2/fpm/pool.d/www.conf && kill -USR2 $(cat /run/php/php8.2-fpm.pid) && "
          "for i in $(seq 50); do ss -Hltn | grep -q 127.0.0.1:9001 && exit 0; sleep 0.1; done; exit 1")


def test_a_burst_through_the_balancer_shows_up_as_requests_per_second(wch):
    # web1 gets a php-fpm status page (as `opsctl harden` gives every pool); web2 stays stock.
    labtools.ssh(wch, "web1", STATUS, check=True)
    lb = wch.by_role("lb")[0]
    with BackgroundLoad(lb.address, "/work.php?ms=100", seconds=8, concurrency=8, max_requests=2000) as load:
        time.sleep(1)
        rc, report = once(wch, "--interval", "2s")
        load.stop()
    assert rc == 0 and load.result is not None and load.result.ok > 0
    by_host = {h["host"]: h["figures"] for h in report["hosts"]}
    for web in wch.by_role("web"):
        figures = by_host[web.name]
        # 8 clients of 100 ms requests: about 80 requests per second, spread over two hosts.
        assert figures["rps"] > 5, figures
        assert figures["shares"]["2xx"] > 0.9
    assert by_host[lb.name]["rps"] > 10
    assert report["fleet"]["rps"] >= sum(by_host[w.name]["rps"] for w in wch.by_role("web"))
    # The status page's figures, where there is one: about 4 busy workers; "-" where there is none.
    web1, web2 = by_host["web1"], by_host["web2"]
    assert web1["fpm_active"] >= 1 and web1["fpm_idle"] is not None and web1["fpm_listen_queue"] == 0
    assert web1["fpm_max_children"] == 0 and web1["close_wait"] == 0    # a TCP listener now: CLOSE_WAIT is counted
    assert web2["fpm_active"] is None and web2["close_wait"] is None


def tmux_available() -> None:
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (scripts/setup installs it)")


SOCKET = f"opsctl-wch-{uuid.uuid4().hex[:6]}"


def tmux(*args: str) -> subprocess.CompletedProcess:
    """tmux on a server of the test's own (its own socket, no configuration): the size asked
    for is the size it gets, whatever else runs tmux on the machine."""
    return subprocess.run(["tmux", "-L", SOCKET, "-f", "/dev/null", *args], capture_output=True, text=True,
                          timeout=20)


def test_the_full_screen_in_tmux_shows_hosts_and_figures(wch, tmp_path: Path):
    tmux_available()
    session = f"wch-{uuid.uuid4().hex[:6]}"
    record = tmp_path / "watch.jsonl"
    command = f"{sys.executable} -m opsctl watch --inventory {wch.name} --duration 8s --record {record}; sleep 20"
    assert tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "30", command).returncode == 0
    try:
        screen, rows = "", {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(1)
            screen = tmux("capture-pane", "-p", "-t", session).stdout
            # A host's row, once it has figures: its name, req/s, ... and its queue (waiting/limit).
            rows = {line.split()[0]: line for line in screen.splitlines()
                    if line.strip() and re.search(r" \d+/\d+ ", line) and not line.startswith("fleet")}
            if "fleet: 3/3 hosts answer" in screen and {h.name for h in wch.hosts} <= set(rows):
                break
        assert "fleet: 3/3 hosts answer" in screen, screen
        assert {h.name for h in wch.hosts} <= set(rows), screen
        assert re.search(r"req/s +req/s 1m .* queue", screen), screen
        assert " 0/511 " in rows["lb1"] and " 0.0 " in rows["lb1"], screen     # nginx's backlog, no overflow
        assert "LOST" not in screen, screen
    finally:
        tmux("kill-server")
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert {entry["host"] for entry in lines if "figures" in entry} == {h.name for h in wch.hosts}


def kill_sshd(spec, name: str) -> None:
    """Every sshd process of the host (listener and sessions): the host is gone for SSH."""
    host = next(h for h in spec.hosts if h.name == name)
    for pid in system.netns_pids(host.netns):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_a_host_whose_sshd_dies_is_lost_within_two_intervals(wch, tmp_path: Path):
    record = tmp_path / "watch.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", "watch", "--inventory", wch.name, "--duration", "10s",
                             "--record", str(record)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if record.exists() and sum('"figures"' in line and '"web2"' in line
                                       for line in record.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        killed = time.time()
        kill_sshd(wch, "web2")
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        opsctl("lab", "up", "--name", wch.name, "--web", "2", check=True)
    entries = [json.loads(line) for line in record.read_text().splitlines()]
    lost = [e for e in entries if e["host"] == "web2" and e.get("state") == "lost"]
    assert lost, entries[-5:]
    assert lost[0]["time"] - killed <= 2.0 + 0.5, (lost[0], killed)
    # The other hosts kept answering.
    assert any(e["host"] == "web1" and "figures" in e and e["time"] > killed + 2 for e in entries)


@pytest.fixture(scope="module")
def jumped():
    yield from fresh_lab("wchj", 2, "debian", "--bastion")


def test_once_through_a_bastion_with_a_sudo_password(jumped):
    """Every host behind one bastion (ProxyJump), web1 as a user whose sudo needs a password:
    the sampler runs as root there too (it reads nginx's and php-fpm's sockets)."""
    rc, report = once(jumped)
    assert rc == 0, report
    by_host = {h["host"]: h for h in report["hosts"]}
    assert set(by_host) == {h.name for h in jumped.hosts if h.role != "bastion"}
    kinds = {item["kind"] for item in by_host["web1"]["figures"]["listeners"]}
    assert kinds == {"nginx", "php-fpm"}      # ss -p named the owners: root, through sudo
