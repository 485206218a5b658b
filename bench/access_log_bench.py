#!/usr/bin/env python3
"""How fast plugins/plugin_utils/access_log.py reads access logs (issue 15: `profile suggest` and
`report` read a fleet's logs on the hosts themselves, so the reader's speed is their CPU bound).

Builds a log of --lines lines from the real lines in tests/unit/data/access_log/ (what a lab
balancer's nginx wrote: proxied, retried, static, 4xx, 5xx, 499, junk requests), in opsctl_timing,
in combined and in a `main` + times variant read by its definition, writes each to a file and reads
it back as the on-host aggregation will: line by line from the file, one Entry per line. Prints
lines per second of wall-clock and of CPU time (the process's own, which a loaded machine does
not distort as much), and the bytes per line.

Usage: bench/access_log_bench.py [--lines 1000000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ansible_collections.opsctl.fleet.plugins.plugin_utils import access_log  # noqa: E402

DATA = REPO / "tests/unit/data/access_log"
MAIN_RT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
           '"$http_user_agent" $request_time $upstream_response_time')


def sample(name: str, count: int) -> list[str]:
    lines = (DATA / f"{name}.log").read_text().splitlines()
    if name == "opsctl_timing":   # the lab's own balancer lines: the common case, proxied and 200
        lines += [line for line in (DATA / "lab-lb1.log").read_text().splitlines() if "opsctl" not in line
                  and line.count('"') > 10] * 3
    return (lines * (count // len(lines) + 1))[:count]


def measure(name: str, count: int, formats: list[access_log.LogFormat]) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".log") as log:
        log.write("\n".join(sample(name, count)) + "\n")
        log.flush()
        size = Path(log.name).stat().st_size
        reader = access_log.Reader(formats)
        wall, cpu = time.perf_counter(), time.process_time()
        with open(log.name, encoding="utf-8", errors="replace") as stream:
            read = sum(1 for _entry in reader.entries(stream))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{name:14} {read:>9} read, {reader.unreadable} unreadable, {size / count:5.0f} B/line: "
          f"{count / wall:>9,.0f} lines/s wall ({wall:.1f} s), {count / cpu:>9,.0f} lines/s CPU ({cpu:.1f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    args = parser.parse_args()
    measure("opsctl_timing", args.lines, [])
    measure("combined", args.lines, [])
    measure("main_rt", args.lines, [access_log.LogFormat(MAIN_RT)])


if __name__ == "__main__":
    main()
