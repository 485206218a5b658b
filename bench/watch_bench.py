#!/usr/bin/env python3
"""What does `opsctl watch` cost, and is every refresh in time? A lab of 1 lb + WEB web hosts
(lab --lab), watched at a 1 s interval for SECONDS after every host answered, idle and then
under a bounded load through the lab's balancer:

- per host and sample: the sampler's own CPU time (its shell and children, which every sample
  carries: figures.cpu_ms), and that of watch's processes on the host (the sampler and sshd's
  session, from /proc of the lab's namespaces: what watch costs the host in all);
- on the controller: the watch process's CPU time (every thread, drawing its full screen on a
  200x50 pseudo-terminal included), per host-sample and per second;
- lateness: for every refresh (a tick of the sessions' shared clock), how long after its due
  time the sample of its last host arrived (each sample records its tick: `due`), and when the
  frame that shows it began to be written: p50 / p99 / max, how many refreshes had every host
  within the interval and how many frames showed every host's sample of their tick;
- the machine's load average at the start and at the end of each run, and how busy its cores
  were, by watch (controller and hosts) and by the rest: the lab's hosts, the controller and
  whatever else runs here share the same cores (the load average counts every runnable task:
  100 samplers started at the same tick count 100 at that moment);
- one frame of the screen for 100 hosts (pure: parse, figures, render).

Only the lab's own addresses are contacted; the lab is taken down at the end (--keep keeps it).
Usage (root, from the checkout):

    .venv/bin/python bench/watch_bench.py [--web 20] [--seconds 30] [--lab wchb] [--keep]
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import math
import os
import pty
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
HZ = os.sysconf("SC_CLK_TCK")
INTERVAL = 1.0
COLUMNS, ROWS = 200, 50       # the terminal watch draws in
WATCH_PROCESSES = ("sshd", "sh")   # on a lab host: sshd's sessions and the sampler (its children in its cutime)


def cpu_seconds(pid: int, children: bool = False) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15 if children else 13]) / HZ


def watch_processes(netns: list[str]) -> list[int]:
    """PIDs of watch's processes on the lab's hosts, in one pass over /proc (`ip netns pids` per
    host would scan it once per host: a load of its own on 100 hosts)."""
    inodes = {os.stat(f"/run/netns/{name}").st_ino for name in netns}
    found = []
    for entry in os.scandir("/proc"):
        try:
            if not entry.name.isdigit() or os.stat(f"/proc/{entry.name}/ns/net").st_ino not in inodes:
                continue
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
            parent = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1]
            # The lab's own boot shell (its parent: unshare) is not watch's.
            if comm in WATCH_PROCESSES and Path(f"/proc/{parent}/comm").read_text().strip() != "unshare":
                found.append(int(entry.name))
        except OSError:
            pass   # gone meanwhile
    return found


def host_cpu(pids: list[int]) -> dict[int, float]:
    """PID -> CPU seconds, its reaped children's included (the sampler's ss, awk...)."""
    found = {}
    for pid in pids:
        try:
            found[pid] = cpu_seconds(pid, children=True)
        except (OSError, ValueError):
            pass
    return found


def machine_busy() -> float:
    """CPU seconds the machine's cores spent busy (not idle, not waiting for I/O) since boot."""
    jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(jiffies[:8]) - jiffies[3] - jiffies[4]) / HZ


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(math.ceil(p / 100 * len(ordered)) - 1, 0))]


class Terminal:
    """A pseudo-terminal of COLUMNS x ROWS for watch's full screen, read by a thread that notes
    when each frame began to be written (output after a pause of more than 50 ms)."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        self.frames: list[float] = []
        self._last = 0.0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                return
            if not chunk:
                return
            now = time.time()
            if now - self._last > 0.05:
                self.frames.append(now)
            self._last = now

    def close(self) -> None:
        os.close(self.slave)
        os.close(self.master)


@dataclass
class Window:
    """What one watch run measured between two moments after every host answered."""
    start: float
    end: float
    controller_s: float
    hosts_s: float
    machine_s: float      # every core's busy time, whoever's


def lateness(samples: list[dict], hosts: int, window: Window, frames: list[float]) -> str:
    """Per refresh due within the window: when its last host's sample arrived after its due time,
    and when the frame that shows the refresh began to be written."""
    due = [s for s in samples if s.get("due") is not None and window.start <= s["due"] <= window.end - INTERVAL]
    if not due:
        return "no refresh in the window"
    first = min(s["due"] for s in due)
    ticks: dict[int, list[dict]] = {}
    for sample in due:
        ticks.setdefault(round((sample["due"] - first) / INTERVAL), []).append(sample)
    complete, drawn, whole = [], [], 0
    for group in ticks.values():
        tick, last = group[0]["due"], max(s["time"] for s in group)
        if len(group) == hosts:
            complete.append(last - tick)
        frame = next((f for f in frames if tick < f <= tick + INTERVAL), None)
        if frame is not None:
            drawn.append(frame - tick)
            whole += len(group) == hosts and frame >= last
    if not complete or not drawn:
        return f"refreshes {len(ticks)}: {len(complete)} with every host, {len(drawn)} drawn"

    def spread(values: list[float]) -> str:
        return (f"p50 {1000 * percentile(values, 50):.0f} ms, p99 {1000 * percentile(values, 99):.0f} ms, "
                f"max {1000 * max(values):.0f} ms")

    return (f"refreshes {len(ticks)}: {len(complete)} with every host's sample within the interval, the last one "
            f"after the tick {spread(complete)}\n"
            f"        frames at {COLUMNS}x{ROWS}: {len(drawn)}, {whole} showing every host's sample of their tick, "
            f"begun after the tick {spread(drawn)}")


def watched(lab: str, netns: list[str], hosts: int, seconds: int, load_at: str | None) -> str:
    from opsctl.lab.load import BackgroundLoad

    record = Path(tempfile.mktemp(suffix=".jsonl"))
    started_load = load_average()
    terminal = Terminal()
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", "watch", "--inventory", lab, "--interval", f"{INTERVAL:g}s",
                             "--duration", f"{seconds + 300}s", "--record", str(record)],
                            stdin=terminal.slave, stdout=terminal.slave, stderr=subprocess.DEVNULL,
                            env=dict(env, TERM="xterm-256color"))
    load = BackgroundLoad(load_at, "/work.php?ms=20", seconds=seconds + 200, concurrency=4,
                          max_requests=500_000) if load_at else None
    try:
        if load:
            load.__enter__()
        # Past start-up (the inventory, the connections, discovery on every host): two samples of every host.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            seen: dict[str, int] = {}
            written = record.read_text() if record.exists() else ""
            for line in written.split("\n")[:-1]:     # whole lines: the last one may be half written
                host = json.loads(line).get("host")
                seen[host] = seen.get(host, 0) + ('"figures"' in line)
            if len(seen) == hosts and min(seen.values()) >= 2:
                break
            time.sleep(1)
        pids = watch_processes(netns)
        c1, h1, m1, t1 = cpu_seconds(proc.pid), host_cpu(pids), machine_busy(), time.time()
        time.sleep(seconds)
        c2, h2, m2, t2 = cpu_seconds(proc.pid), host_cpu(pids), machine_busy(), time.time()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        terminal.close()
        if load:
            load.stop()
            load.__exit__()
    window = Window(t1, t2, c2 - c1, sum(h2[pid] - h1[pid] for pid in h2.keys() & h1.keys()), m2 - m1)
    samples = [json.loads(line) for line in record.read_text().splitlines() if '"figures"' in line]
    record.unlink()
    inside = [s for s in samples if t1 <= s["time"] <= t2]
    costs = [s["figures"]["cpu_ms"] for s in inside if s["figures"]["cpu_ms"] is not None]
    rps = max((s["figures"]["rps"] or 0 for s in inside), default=0)
    per_sample = 1000 * window.controller_s / len(inside)
    return (f"{'loaded' if load_at else 'idle':6}  {hosts} hosts, {len(inside)} samples in {t2 - t1:.0f} s "
            f"(up to {rps:.0f} req/s on a host), load average {started_load} -> {load_average()}\n"
            f"        the {os.cpu_count()} cores {100 * window.machine_s / (t2 - t1) / os.cpu_count():.0f}% busy: watch "
            f"{100 * (window.controller_s + window.hosts_s) / (t2 - t1) / os.cpu_count():.0f}% (controller and "
            f"hosts), the rest {100 * (window.machine_s - window.controller_s - window.hosts_s) / (t2 - t1) / os.cpu_count():.0f}% "
            f"(other work on the machine{', the load and the lab serving it' if load_at else ''})\n"
            f"        per host and sample: sampler {sum(costs) / len(costs):.1f} ms CPU, with sshd's session "
            f"{1000 * window.hosts_s / len(inside):.1f} ms\n"
            f"        controller: {per_sample:.2f} ms CPU per host-sample, "
            f"{1000 * window.controller_s / (t2 - t1):.0f} ms per second\n"
            f"        {lateness(samples, hosts, window, terminal.frames)}")


def frame_of_100() -> str:
    from rich.console import Console

    from opsctl.watch.board import Board
    from opsctl.watch.sessions import Event
    from opsctl.watch.view import render
    from tests.unit.test_watch_figures import line

    names = [f"web{i}" for i in range(1, 101)]
    board = Board(names, 1.0)
    started = time.process_time()
    for seq in range(1, 61):
        for name in names:
            log = {"files": 1, "new": 1, "read": 1, "lines": 100, "s": {"200": 99, "499": 1}, "urt": {20: 50, 35: 50}}
            board.apply(Event(name, 100 + seq, line(seq=seq, up=100 + seq, log=log)))
        board.tick_fleet(100 + seq)
    parsed = time.process_time()
    console = Console(file=io.StringIO(), width=200, height=50, force_terminal=True)
    for _ in range(20):
        console.print(render(board, 161, 50, "bench", 200))
    drawn = time.process_time()
    return (f"pure    parse + figures {1000 * (parsed - started) / 6000:.2f} ms per host-sample; "
            f"one frame of 100 hosts at 200x50 {1000 * (drawn - parsed) / 20:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--web", type=int, default=20)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--lab", default="wchb")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    opsctl = [sys.executable, "-m", "opsctl"]
    subprocess.run([*opsctl, "lab", "up", "--name", args.lab, "--web", str(args.web)], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        from opsctl.lab import fleet

        spec = fleet.load_spec(args.lab)
        netns = [h.netns for h in spec.hosts]
        lb = spec.by_role("lb")[0].address
        print(watched(args.lab, netns, len(spec.hosts), args.seconds, None), flush=True)
        print(watched(args.lab, netns, len(spec.hosts), args.seconds, lb), flush=True)
        print(frame_of_100(), flush=True)
    finally:
        if not args.keep:
            subprocess.run([*opsctl, "lab", "down", "--name", args.lab], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
