"""HAProxy as the balancer (`opsctl lab up --balancer haproxy`, one lab of 1 lb + 2 web hosts):
the rolling reload drains through HAProxy's runtime API under order load and loses nothing, with
the drain seen in `show stat` while it runs."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest

from opsctl.lab.load import BackgroundLoad, Orders
from opsctl.lab.spec import UPSTREAM
from tests.conftest import fresh_lab, opsctl
from tests.labtools import playbook, ssh

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
