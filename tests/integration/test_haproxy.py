"""HAProxy as the balancer (`opsctl lab up --balancer haproxy`, one lab of 1 lb + 2 web hosts):
check judges the stock HAProxy; the rolling reload drains through HAProxy's runtime API under
order load and loses nothing, with the drain seen in `show stat` while it runs; harden (of the lb)
converges, then changes nothing, and check passes; a web host whose php-fpm is frozen is DOWN in
`show stat` within the window `harden --explain` states."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid

import pytest

from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import haproxy_ejection_ms
from opsctl.lab.load import BackgroundLoad, Orders
from opsctl.lab.spec import UPSTREAM
from tests.conftest import fresh_lab, opsctl
from tests.labtools import playbook, recap, ssh

pytestmark = pytest.mark.lab

SOCKET = "/run/haproxy/admin.sock"   # Debian's haproxy.cfg: stats socket ... level admin

# On the lb: every 0.1 s for at most SECONDS, the status and sessions of each server of the
# backend as HAProxy's `show stat` says them; one JSON line each time they change. Exits early
# once every server was seen DRAIN and then UP again.
WATCH = r"""
import json, socket, sys, time
def api(cmd):
    s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(SOCK); s.sendall(cmd.encode() + b"\n")
    out = b""
    while True:
        d = s.recv(65536)
        if not d: return out.decode()
        out += d
SOCK, BACKEND, SECONDS = sys.argv[1], sys.argv[2], float(sys.argv[3])
start, last, drained, back = time.monotonic(), None, set(), set()
while time.monotonic() - start < SECONDS:
    lines = api("show stat").splitlines()
    head = lines[0][2:].split(",")
    rows = [dict(zip(head, l.split(","))) for l in lines[1:] if l.startswith(BACKEND + ",")]
    now = {r["svname"]: [r["status"], int(r["scur"] or 0)] for r in rows if r["svname"] != "BACKEND"}
    if now != last:
        print(json.dumps({"t": round(time.monotonic() - start, 2), "servers": now}), flush=True)
        last = now
    drained |= {n for n, (st, _) in now.items() if st.startswith("DRAIN")}
    back |= {n for n, (st, _) in now.items() if n in drained and st.startswith("UP")}
    if drained and back == set(now):
        break
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def hlab(lab_name: str):
    for spec in fresh_lab(f"{lab_name}hap", 2, "debian", "--balancer", "haproxy"):
        # HAProxy starts checking before the web hosts answer: wait until it sees them all UP.
        deadline = time.monotonic() + 20
        while {row["status"] for row in servers(spec).values()} != {"UP"} and time.monotonic() < deadline:
            time.sleep(0.5)
        yield spec


def api(spec, command: str) -> str:
    lb = spec.by_role("lb")[0]
    script = ("import socket,sys;s=socket.socket(socket.AF_UNIX);s.settimeout(5);s.connect(sys.argv[1]);"
              "s.sendall(sys.argv[2].encode()+b'\\n');s.shutdown(1);"
              "print(b''.join(iter(lambda:s.recv(65536),b'')).decode())")
    return ssh(spec, lb, f"python3 -c {json.dumps(script)} {SOCKET} '{command}'", check=True).stdout


def servers(spec) -> dict[str, dict[str, str]]:
    lines = api(spec, "show stat").splitlines()
    head = lines[0][2:].split(",")
    rows = [dict(zip(head, line.split(","))) for line in lines[1:] if line.startswith(UPSTREAM + ",")]
    return {row["svname"]: row for row in rows if row["svname"] != "BACKEND"}


def haproxy_results(spec) -> dict[tuple[str, str], dict]:
    proc = opsctl("check", "--inventory", spec.name, "--limit", "lb1", "--format", "json")
    results = json.loads(proc.stdout)["results"]
    return {(r["check"], r["item"]): r for r in results if r["check"].startswith("haproxy-")}


def test_check_judges_the_stock_haproxy(hlab):
    found = haproxy_results(hlab)
    timeouts, health = found[("haproxy-timeouts", "backend opsctl_web")], found[("haproxy-health-check", "backend opsctl_web")]
    assert timeouts["status"] == "fail" and "timeout server 50000 ms" in timeouts["observed"], timeouts
    assert health["status"] == "fail" and "DOWN after up to 12000 ms" in health["observed"], health
    assert found[("haproxy-maxconn", "backend opsctl_web")]["status"] == "warn"
    assert found[("haproxy-config-valid", "")]["status"] == "pass"
    assert found[("haproxy-http-check", "backend opsctl_web")]["status"] == "pass"


def test_rolling_reload_under_load_through_haproxy_loses_nothing(hlab):
    lb = hlab.by_role("lb")[0]
    webs = {h.name for h in hlab.by_role("web")}
    prefix = uuid.uuid4().hex[:8]
    watched: list[dict] = []
    watcher = threading.Thread(target=lambda: watched.extend(
        json.loads(line) for line in ssh(hlab, lb, f"python3 - {SOCKET} {UPSTREAM} 120 <<'EOF'\n{WATCH}\nEOF",
                                         timeout=150).stdout.splitlines()))
    with BackgroundLoad(lb.address, "/order.php?ms=100", seconds=240, concurrency=8, order_prefix=prefix) as load:
        watcher.start()
        rolled = opsctl("reload", "php-fpm", "--rolling", "--inventory", hlab.name)
        load.stop()
    watcher.join()
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    ledgers = "".join(ssh(hlab, h, "cat /var/lib/opsctl-lab/orders.log", check=True).stdout for h in hlab.by_role("web"))
    orders = Orders.from_ledger(ledgers, prefix)
    result = load.result
    print(f"\nhaproxy rolling reload: {result.sent} requests, {result.non_2xx} non-2xx, {result.errors} errors; "
          f"orders {orders}; show stat: {watched}")
    assert result.sent > 20 and result.non_2xx == 0 and result.errors == 0, result
    assert orders.begun > 20 and orders.orphaned == 0, orders
    # Each web host was seen DRAIN in show stat while the others served, and UP again after.
    seen = {name for sample in watched for name, (status, _) in sample["servers"].items() if status.startswith("DRAIN")}
    assert seen == webs, watched
    assert all(any(st.startswith("UP") for st, _ in sample["servers"].values()) for sample in watched), watched
    assert {name: row["status"] for name, row in servers(hlab).items()} == {name: "UP" for name in webs}


def test_drain_names_a_missing_backend_and_changes_nothing(hlab):
    proc = playbook(hlab, "tests/integration/playbooks/drain.yml", "--limit", "web1",
                    "-e", '{"opsctl_drain_balancers": [{"host": "lb1", "type": "haproxy", "upstream": "nosuch"}]}')
    assert proc.returncode != 0
    assert "backend nosuch: Can't find backend." in proc.stdout and "nothing changed" in proc.stdout, proc.stdout
    assert {row["status"] for row in servers(hlab).values()} == {"UP"}


def test_drain_with_the_socket_and_server_given_then_serving(hlab):
    given = {"host": "lb1", "type": "haproxy", "upstream": UPSTREAM, "server": "web2", "socket": SOCKET}
    for state, status in (("drained", "DRAIN"), ("serving", "UP")):
        proc = playbook(hlab, "tests/integration/playbooks/drain.yml", "--limit", "web2",
                        "-e", json.dumps({"opsctl_drain_balancers": [given], "opsctl_drain_state": state}))
        assert proc.returncode == 0, proc.stdout
        row = servers(hlab)["web2"]
        assert row["status"] == status, row


def test_harden_converges_then_changes_nothing_and_check_passes(hlab):
    first = opsctl("harden", "--inventory", hlab.name, "--limit", "lb1")
    assert first.returncode == 0, first.stdout + first.stderr
    second = opsctl("harden", "--inventory", hlab.name, "--limit", "lb1")
    assert second.returncode == 0, second.stdout + second.stderr
    changed = [re.search(r"│ lb1\s+│ converged\s+│ \d+\s+│ (\d+)", proc.stdout)[1] for proc in (first, second)]
    print(f"\nharden of lb1: changed {changed[0]}, then {changed[1]}")
    assert int(changed[0]) > 0 and changed[1] == "0", (first.stdout, second.stdout)
    cfg = ssh(hlab, hlab.by_role("lb")[0], "cat /etc/haproxy/haproxy.cfg", check=True).stdout
    assert "timeout server 2s" in cfg and "maxconn 30" in cfg and "option redispatch" in cfg
    found = haproxy_results(hlab)
    assert {key: r["status"] for key, r in found.items()} == {key: "pass" for key in found}, found


# On the lb: print the wall clock, then poll `show stat` every 20 ms for at most 30 s until SERVER
# is DOWN, and print the wall clock then.
WAIT_DOWN = r"""
import socket, sys, time
sock, backend, server = sys.argv[1:4]
print("ready", time.time(), flush=True)
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(sock); s.sendall(b"show stat\n")
    out = b"".join(iter(lambda: s.recv(65536), b"")).decode()
    row = [l.split(",") for l in out.splitlines() if l.startswith(backend + "," + server + ",")][0]
    if row[17].startswith("DOWN"):
        print("down", time.time(), row[17], flush=True)
        break
    time.sleep(0.02)
"""


def test_a_frozen_php_fpm_is_down_within_the_window_explain_states(hlab):
    lb, web1 = hlab.by_role("lb")[0], hlab.by_role("web")[0]
    explain = json.loads(opsctl("harden", "--inventory", hlab.name, "--limit", "lb1", "--explain",
                                "--format", "json", check=True).stdout)
    plan = next(h for h in explain if h["host"] == "lb1")["plan"]
    value = {key: entry["value"] for key, entry in plan.items()}
    window = haproxy_ejection_ms(value["haproxy.check_inter_ms"], value["haproxy.check_inter_ms"],
                                 value["haproxy.timeout_check_ms"], value["haproxy.check_fall"])
    assert f"DOWN within inter + fall x timeout check + (fall - 1) x fastinter = {window} ms" in \
        plan["haproxy.check_inter_ms"]["reason"]
    lines: list[str] = []
    watcher = threading.Thread(target=lambda: lines.extend(ssh(
        hlab, lb, f"python3 - {SOCKET} {UPSTREAM} {web1.name} <<'EOF'\n{WAIT_DOWN}\nEOF", timeout=60).stdout.splitlines()))
    watcher.start()
    try:
        time.sleep(3)   # the watcher's SSH session is up and polling (its output comes at its end)
        frozen = float(ssh(hlab, web1, "date +%s.%N; kill -STOP $(pgrep php-fpm)", check=True).stdout.split()[0])
        watcher.join()
    finally:
        ssh(hlab, web1, "kill -CONT $(pgrep php-fpm)")
    down = next((line for line in lines if line.startswith("down")), "")
    assert down, lines
    took_ms = (float(down.split()[1]) - frozen) * 1000
    print(f"\nweb1 frozen: DOWN in show stat after {took_ms:.0f} ms; the window --explain states: {window} ms")
    assert 0 < took_ms <= window, (took_ms, window, lines)
    deadline = time.monotonic() + 20
    while servers(hlab)["web1"]["status"] != "UP" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert servers(hlab)["web1"]["status"] == "UP"
