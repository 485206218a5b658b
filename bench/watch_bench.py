#!/usr/bin/env python3
"""What does `opsctl watch` cost? A lab of 1 lb + WEB web hosts (lab `wchb`), watched for
SECONDS at a 1 s interval, idle and then under a bounded load through the lab's balancer:

- on each host: the sampler's own CPU time per sample (its shell and children, which every
  sample carries from /proc/$$/stat: figures.cpu_ms), averaged over every sample;
- on the controller: the watch process's CPU time (/proc/PID/stat) between two moments after
  start-up, per second and per host-sample; and one frame of the screen for 100 hosts.

Only the lab's own addresses are contacted; the lab is taken down at the end (--keep keeps it).
Usage (root, from the checkout):

    .venv/bin/python bench/watch_bench.py [--web 20] [--seconds 30] [--keep]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
LAB = "wchb"
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def watched(seconds: int, load_at: str | None) -> str:
    from opsctl.lab.load import BackgroundLoad

    record = tempfile.mktemp(suffix=".jsonl")
    load = BackgroundLoad(load_at, "/work.php?ms=20", seconds=seconds + 5, concurrency=4,
                          max_requests=200_000) if load_at else None
    if load:
        load.__enter__()
    proc = subprocess.Popen([sys.executable, "-m", "opsctl", "watch", "--inventory", LAB, "--duration",
                             f"{seconds}s", "--record", record], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(6)   # past start-up: the inventory, the connections, discovery on the hosts
        c1, t1 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds - 8)
        c2, t2 = cpu_seconds(proc.pid), time.monotonic()
        proc.wait(timeout=60)
    finally:
        if load:
            load.stop()
            load.__exit__()
    samples = [json.loads(line) for line in Path(record).read_text().splitlines() if '"figures"' in line]
    os.unlink(record)
    hosts = len({s["host"] for s in samples})
    costs = [s["figures"]["cpu_ms"] for s in samples if s["figures"]["cpu_ms"] is not None]
    rps = max((s["figures"]["rps"] or 0 for s in samples), default=0)
    per_second = 1000 * (c2 - c1) / (t2 - t1)
    return (f"{'loaded' if load_at else 'idle':6}  hosts {hosts}  host sampler {sum(costs) / len(costs):.1f} ms CPU "
            f"per sample ({len(costs)} samples, up to {rps:.0f} req/s on a host)  controller {per_second:.1f} ms "
            f"CPU per second = {per_second / hosts:.2f} ms per host-sample")


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
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    opsctl = [sys.executable, "-m", "opsctl"]
    subprocess.run([*opsctl, "lab", "up", "--name", LAB, "--web", str(args.web)], check=True,
                   stdout=subprocess.DEVNULL)
    try:
        from opsctl.lab import fleet

        lb = fleet.load_spec(LAB).by_role("lb")[0].address
        print(watched(args.seconds, None), flush=True)
        print(watched(args.seconds, lb), flush=True)
        print(frame_of_100(), flush=True)
    finally:
        if not args.keep:
            subprocess.run([*opsctl, "lab", "down", "--name", LAB], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
