"""`opsctl watch` against a real lab: one sample of every host agrees with what ss and
/proc/net/netstat say on the host; a burst through the balancer shows up as requests per
second; the full screen, driven in tmux, shows hosts and figures; a host whose sshd dies is
shown lost within two intervals; under an overload burst, every sample's queue, overflows,
CLOSE_WAIT and 2xx/499/503 counts lie within what ss, /proc/net/netstat and the access log said
on the host in the same moments."""

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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import pytest

from opsctl.lab import remote, system
from opsctl.lab.load import FPM_POOL, WEB_SITE, BackgroundLoad, Burst, fpm_on_tcp, impatient_burst
from tests import labtools
from tests.conftest import fresh_lab, opsctl

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def wch(lab_name):
    yield from fresh_lab(f"{lab_name}wch"[:8], web=2)


def once(spec, *args: str) -> tuple[int, dict]:
    proc = opsctl("watch", "--inventory", spec.name, "--once", "--format", "json", *args, timeout=90)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def listening(lines: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Local address -> (Recv-Q, Send-Q) of every listening socket in the lines of `ss -Hlntx`."""
    return {f[4]: (int(f[2]), int(f[3])) for f in (line.split() for line in lines) if len(f) >= 5}


def tcp_ext(lines: Iterable[str]) -> dict[str, int]:
    """The TcpExt counters of /proc/net/netstat's lines (a line of names, then one of values)."""
    rows = [line.split() for line in lines if line.startswith("TcpExt:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


def ss_listeners(spec, host: str) -> dict[str, tuple[int, int]]:
    """Local address -> (Recv-Q, Send-Q) of every listening TCP and unix socket, as ss says."""
    return listening(labtools.ssh(spec, host, "ss -Hlntx", check=True).stdout.splitlines())


def netstat(spec, host: str) -> dict[str, int]:
    return tcp_ext(labtools.ssh(spec, host, "cat /proc/net/netstat", check=True).stdout.splitlines())


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
            if "fleet: 3/3 hosts answer" in screen and {h.name for h in wch.hosts} <= set(rows) \
                    and " 0.0 " in rows["lb1"]:      # rated: two samples of every host
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


# An overload burst on web2, watched, while the test reads the same host by its own means.
# A burst the test can afford (40 new clients a second for 6 s, each giving up after 1.5 s, on
# 500 ms requests: 4x what the stock pool's 5 workers serve) overflows php-fpm's accept queue
# when that queue is 8 long instead of Debian's 4096. php-fpm listens on TCP, as in the seed, so
# that its overflows count in /proc/net/netstat and the connections nginx gave up on show as
# CLOSE_WAIT; nginx sheds (503) past 30 requests in flight, as a hardened host's limit_conn does.
#
# The tolerances. A sample reads the host after the tick that asked for it (its `due`) and before
# it arrived; the test's readings, each with its own start and end, fall around those moments.
# Between the reads of two samples, a counter (ListenOverflows, ListenDrops, the log's lines by
# status) must have grown by no less than the readings within say and no more than the readings
# outside say; watch's overflows are a rate over the host's own interval, which is the arrivals'
# within a few ms: one overflow either way. A level (a queue, CLOSE_WAIT) must be one that the
# readings around the sample saw, give or take LEVEL_SLACK. Over the whole run (idle before and
# after the burst) watch's counts must equal the log's exactly.
FPM_LISTEN, SHED = "127.0.0.1:9000", "/etc/nginx/conf.d/burst.conf"
OVERLOADABLE = (f"cp -p {FPM_POOL} {WEB_SITE} /root/ && {fpm_on_tcp(FPM_LISTEN, backlog=8)} && "
                f"printf 'limit_conn_zone $server_port zone=burst:1m;\\nlimit_conn burst 30;\\n' >{SHED} && "
                "nginx -t -q && /etc/init.d/php8.2-fpm restart >/dev/null && nginx -s reload")
STOCK = (f"cp -p /root/{Path(FPM_POOL).name} {FPM_POOL} && cp -p /root/{Path(WEB_SITE).name} {WEB_SITE} && rm -f {SHED} && "
         "/etc/init.d/php8.2-fpm restart >/dev/null && nginx -s reload")
# The host's own view, every ~0.15 s, at most 400 times or 60 s: when the reading began, the
# access log's size and the CLOSE_WAIT sockets on php-fpm's port; the listeners and the TCP
# counters; when it ended.
OBSERVE = r"""end=$(($(date +%s) + 60)); i=0
while [ $i -lt 400 ] && [ "$(date +%s)" -lt $end ]; do
  echo "@ $(date +%s.%N) $(stat -c %s /var/log/nginx/access.log) $(ss -Htn state close-wait '( sport = :PORT )' | wc -l)"
  ss -Hlntx; grep '^TcpExt:' /proc/net/netstat; echo "= $(date +%s.%N)"; i=$((i + 1)); sleep 0.1
done""".replace("PORT", FPM_LISTEN.rsplit(":", 1)[1])
# While requests come, a level (a queue, a CLOSE_WAIT count) can change between two of the test's
# readings unseen (nginx accepts a connection within a millisecond of its arrival): one either way.
LEVEL_SLACK = 1


@dataclass(frozen=True)
class Reading:
    """One look at the host by the test's own means, taken between START and END (epoch s)."""
    start: float
    end: float
    log_size: int
    close_wait: int
    listeners: dict[str, tuple[int, int]]
    counters: dict[str, int]


def readings(text: str) -> list[Reading]:
    found, head, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("@ "):
            head, lines = line.split()[1:], []
        elif line.startswith("= ") and head:
            found.append(Reading(float(head[0]), float(line.split()[1]), int(head[1]), int(head[2]),
                                 listening(x for x in lines if not x.startswith("TcpExt:")), tcp_ext(lines)))
            head = None
        else:
            lines.append(line)
    return found


def statuses_by_size(log: str) -> Callable[[int], Counter]:
    """The access log's status counts (grouped as watch groups them: "2xx", "499", ...) in its
    first SIZE bytes; the combined format: the status follows the quoted request."""
    ends, codes, offset = [], [], 0
    for line in log.splitlines(keepends=True):
        offset += len(line.encode())
        code = line.split('"')[2].split()[0]
        ends.append(offset)
        codes.append("2xx" if code.startswith("2") else code)
    return lambda size: Counter(code for end, code in zip(ends, codes) if end <= size)


def window(sample: dict) -> tuple[float, float]:
    """When a sample read the host: after the tick that asked for it (`due`), before its arrival."""
    return sample["due"], sample["time"]


class HostView:
    """The test's readings around the moments samples read the host. `before` is the last reading
    ended by a moment, `after` the first begun since."""

    def __init__(self, found: list[Reading]) -> None:
        self.found = found

    def before(self, t: float) -> Reading:
        return [r for r in self.found if r.end <= t][-1]

    def after(self, t: float) -> Reading:
        return next(r for r in self.found if r.start >= t)

    def between(self, low: float, high: float) -> list[Reading]:
        """The readings that may have seen what was there between LOW and HIGH (a level: any of theirs)."""
        first, last = self.before(low), self.after(high)
        return [r for r in self.found if first.start <= r.start <= last.start]

    def quiet(self, since: tuple[float, float], until: tuple[float, float]) -> bool:
        """Nothing moved on the host from the reads of one sample to those of the next (no request
        logged, no level changed): then no slack."""
        seen = {(r.log_size, r.close_wait, r.counters["ListenOverflows"], tuple(sorted(r.listeners.items())))
                for r in self.between(since[0], until[1])}
        return len(seen) == 1

    def growth(self, value: Callable[[Reading], float], since: tuple[float, float],
               until: tuple[float, float]) -> tuple[float, float]:
        """How much a counter can have grown from the reads of one sample to those of the next."""
        return (value(self.before(until[0])) - value(self.after(since[1])),
                value(self.after(until[1])) - value(self.before(since[0])))


def recorded(record: Path, host: str | None = None) -> list[dict]:
    """The samples in a --record file (of HOST), in order."""
    text = record.read_text() if record.exists() else ""
    return [e for e in map(json.loads, text.splitlines()) if "figures" in e and host in (None, e["host"])]


def watch_a_burst(spec, web, record: Path) -> Burst:
    """`opsctl watch --record` on WEB while an impatient burst hits it: the burst starts after
    watch's first three samples (two of them rated and idle) and ends before its last two; then
    Ctrl-C, as a user ends a watch."""
    # Run so that SIGUSR1 prints every thread's stack: if Ctrl-C does not end it, the failure
    # says where it stood.
    traced = ("import faulthandler, signal, sys; faulthandler.register(signal.SIGUSR1, all_threads=True); "
              "from opsctl.cli import main; sys.argv[0] = 'opsctl'; main()")
    stacks = record.with_suffix(".stacks")
    with stacks.open("w") as err:
        watch = subprocess.Popen([sys.executable, "-c", traced, "watch", "--inventory", spec.name, "--limit", web.name,
                                  "--duration", "60s", "--record", str(record)], stdout=subprocess.DEVNULL, stderr=err)

    def wait_for(count: int, after: float) -> None:
        deadline = time.monotonic() + 30
        while sum(s["time"] > after for s in recorded(record)) < count and time.monotonic() < deadline:
            time.sleep(0.2)

    try:
        wait_for(3, 0)
        # The clients still waiting at the end wait out their timeout: all leaving in the same
        # millisecond would move CLOSE_WAIT faster than two of the test's readings can bound.
        burst = impatient_burst(web.address, "/work.php?ms=500", rate=40, seconds=6, timeout=1.5, wait_out=True)
        wait_for(2, time.time())
        watch.send_signal(signal.SIGINT)
        try:
            assert watch.wait(timeout=30) == 0, stacks.read_text()
        except subprocess.TimeoutExpired:
            watch.send_signal(signal.SIGUSR1)
            time.sleep(1)
            raise AssertionError(f"watch still running 30 s after Ctrl-C:\n{stacks.read_text()}") from None
        return burst
    finally:
        if watch.poll() is None:
            watch.kill()


def compare(rated: list[tuple[dict, dict]], view: HostView,
            counts: Callable[[int], Counter]) -> tuple[list[str], list[str]]:
    """Each rated sample's figures against the host's readings around it: a row of the table per
    sample (watch's figure [the host's range]), and what did not match."""
    rows, wrong, ref = [], [], rated[0][1]["time"]

    def check(what: str, shown: float, low: float, high: float, slack: float = 0) -> str:
        if not low - slack <= shown <= high + slack:
            wrong.append(f"{what}: watch {shown:g}, the host {low:g}..{high:g}")
        return f"{shown:g} [{low:g}..{high:g}]"

    for prev, cur in rated:
        t0, t1, fig = prev["time"], cur["time"], cur["figures"]
        at, near = f"{t1 - ref:+5.1f}s", view.between(*window(cur))
        slack = 0 if view.quiet(window(prev), window(cur)) else LEVEL_SLACK
        row = [at]
        for item in fig["listeners"]:
            queues = [r.listeners[item["address"]][0] for r in near]
            assert {r.listeners[item["address"]][1] for r in near} == {item["limit"]}, (at, item)
            shown = check(f"{at} queue {item['address']}", item["queue"], min(queues), max(queues), slack)
            if item["address"] == FPM_LISTEN:
                row.append(f"queue {shown}/{item['limit']}")
        closing = [r.close_wait for r in near]
        row.append("CW " + check(f"{at} CLOSE_WAIT", fig["close_wait"], min(closing), max(closing), slack))
        # A rate over the host's own interval between two reads, which is the arrivals' interval
        # within a few ms: one overflow either way.
        for name, key in (("overflows_ps", "ListenOverflows"), ("drops_ps", "ListenDrops")):
            low, high = view.growth(lambda r: r.counters[key], window(prev), window(cur))
            row.append(f"{key} " + check(f"{at} {key}", round(fig[name] * (t1 - t0), 1), low, high, 1))
        for code in ("2xx", "499", "503"):
            low, high = view.growth(lambda r: counts(r.log_size)[code], window(prev), window(cur))
            row.append(f"{code} " + check(f"{at} {code}", fig["statuses"].get(code, 0), low, high))
        rows.append("  ".join(row))
    return rows, wrong


def test_an_overload_burst_shows_what_ss_netstat_and_the_log_say_in_the_same_seconds(wch, tmp_path: Path):
    web = next(h for h in wch.hosts if h.name == "web2")
    record, seen = tmp_path / "watch.jsonl", tmp_path / "observed.txt"
    labtools.ssh(wch, web, OVERLOADABLE, check=True)
    try:
        with seen.open("w") as out:
            observer = subprocess.Popen(remote.ssh_argv(wch, web, OBSERVE), stdout=out, stdin=subprocess.DEVNULL)
        try:
            burst = watch_a_burst(wch, web, record)
        finally:
            observer.kill()
        log = labtools.ssh(wch, web, "cat /var/log/nginx/access.log", check=True).stdout
    finally:
        labtools.ssh(wch, web, STOCK, check=True)
    got = recorded(record, web.name)
    # Rated samples whose reads are known to lie between two moments: their own and the last one's
    # (a session's first sample, taken after discovery, has no tick).
    rated = [(prev, cur) for prev, cur in zip(got, got[1:]) if prev["due"] is not None]
    reads = [cur["time"] - cur["due"] for _, cur in rated]
    assert rated and all(0 < run < 2 for run in reads), reads
    view = HostView(readings(seen.read_text()))
    counts = statuses_by_size(log)
    rows, wrong = compare(rated, view, counts)
    table = "\n".join(rows)
    print(f"\n{web.name}, watch's figure [the host's own readings in the same moments; a sample read the host "
          f"between its tick and its arrival, {1000 * min(reads):.0f}-{1000 * max(reads):.0f} ms]:\n{table}")
    assert not wrong, "\n".join(wrong) + "\n" + table
    # Every request of the burst counted once: idle before watch's first sample and after its last.
    shown = sum((Counter(s["figures"]["statuses"]) for s in got), Counter())
    logged = counts(len(log.encode())) - counts(view.found[0].log_size)
    print(f"burst: {burst.attempts} attempts: {burst.ok} ok, {burst.shed} shed, {burst.timeouts} gave up; "
          f"watch counted {dict(shown)}, the log says {dict(logged)}")
    assert +shown == logged
    # The burst did overload php-fpm, by watch's figures and by the host's own.
    queued = [next(i for i in c["figures"]["listeners"] if i["address"] == FPM_LISTEN) for _, c in rated]
    assert {i["kind"] for i in queued} == {"php-fpm"} and max(i["queue"] for i in queued) >= 8
    assert max(r.listeners[FPM_LISTEN][0] for r in view.found) >= 8
    assert sum(c["figures"]["overflows_ps"] for _, c in rated) > 0
    assert view.found[-1].counters["ListenOverflows"] > view.found[0].counters["ListenOverflows"]
    assert max(c["figures"]["close_wait"] for _, c in rated) > 0 and max(r.close_wait for r in view.found) > 0
    assert logged["499"] > 0 and logged["503"] > 0 and burst.timeouts > 0 and burst.shed > 0


@pytest.fixture(scope="module")
def jumped(lab_name):
    yield from fresh_lab(f"{lab_name}wchj"[:8], 2, "debian", "--bastion")


def test_once_through_a_bastion_with_a_sudo_password(jumped):
    """Every host behind one bastion (ProxyJump), web1 as a user whose sudo needs a password:
    the sampler runs as root there too (it reads nginx's and php-fpm's sockets)."""
    rc, report = once(jumped)
    assert rc == 0, report
    by_host = {h["host"]: h for h in report["hosts"]}
    assert set(by_host) == {h.name for h in jumped.hosts if h.role != "bastion"}
    kinds = {item["kind"] for item in by_host["web1"]["figures"]["listeners"]}
    assert kinds == {"nginx", "php-fpm"}      # ss -p named the owners: root, through sudo
