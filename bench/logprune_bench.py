#!/usr/bin/env python3
"""F4 on the lab: what deleting 2 GB of expired logs does to request latency.

Brings up its own lab (one web host), applies opsctl.fleet.logrotate, then for each method
plants the same expired logs on the web host, runs a steady load against it, deletes the logs
while the load runs, and prints p50/p99 latency before and during the deletion:
- unthrottled: `rm -f` of every expired file at once (what a cleanup script in the rotation
  burst does);
- throttled: opsctl-logprune under ionice -c3 / nice 19 (truncate in steps, then unlink).

Usage: bench/logprune_bench.py [--lab NAME] [--gb 2] [--files 8] [--keep-lab]
Needs root. Sends traffic only to the lab's own web host; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsctl.lab import fleet, remote  # noqa: E402
from opsctl.paths import collections_env  # noqa: E402
from opsctl.lab.load import BackgroundLoad, LoadResult, run_load  # noqa: E402

PATH = "/work.php?ms=5"
LOAD_SECONDS = 8.0


def ssh(spec, host, command: str) -> str:
    proc = remote.run(spec, host, command, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"{host.name}: {command}: {proc.stderr.strip()}")
    return proc.stdout


# Logs grow side by side all day, so their blocks interleave on disk: write them that way
# (64 KB appends, round robin, flushed as we go) to get the extent layout real logs have.
FRAGMENTED = """
import os, sys
files, total = int(sys.argv[1]), int(float(sys.argv[2]) * 1024 ** 3)
chunk = b"x" * 65536
handles = [open("/var/log/nginx/access.log-2025010%d-1" % (i + 1), "ab") for i in range(files)]
for n in range(total // len(chunk)):
    handles[n % files].write(chunk)
    if n % 512 == 0:
        for h in handles: h.flush(); os.fsync(h.fileno())
for h in handles: h.close()
"""


def plant(spec, host, gb: float, files: int, fragmented: bool) -> None:
    size_mb = int(gb * 1024 / files)
    if fragmented:
        ssh(spec, host, f"python3 -c '{FRAGMENTED}' {files} {gb}")
    else:
        ssh(spec, host, f"cd /var/log/nginx && for i in $(seq 1 {files}); do "
                        f"fallocate -l {size_mb}M access.log-2025010$i-1; done")
    ssh(spec, host, "touch -d '60 days ago' /var/log/nginx/access.log-2025010*-1; sync; "
                    "echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; true")


def measure(spec, host, delete: str) -> tuple[LoadResult, LoadResult, float]:
    baseline = run_load(host.address, PATH, seconds=3, concurrency=4)
    with BackgroundLoad(host.address, PATH, seconds=LOAD_SECONDS, concurrency=4) as during:
        time.sleep(0.5)
        started = time.monotonic()
        ssh(spec, host, delete + " && sync")
        took = time.monotonic() - started
    return baseline, during.result, took


def row(name: str, base: LoadResult, during: LoadResult, took: float) -> str:
    return (f"{name:<12} {base.p50:8.1f} {base.percentile(99):8.1f} {during.p50:8.1f} "
            f"{during.percentile(99):8.1f} {during.non_2xx + during.errors:6d} {took:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="lrbench")
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--keep-lab", action="store_true")
    parser.add_argument("--contiguous", action="store_true", help="fallocate the logs instead of writing them interleaved")
    args = parser.parse_args()
    spec = fleet.up(args.lab, 1, None, report=lambda msg: None)
    host = spec.by_role("web")[0]
    apply = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(spec.inventory_dir),
                            "opsctl.fleet.logrotate", "--limit", host.name],
                           capture_output=True, text=True, env=dict(os.environ, **collections_env()))
    if apply.returncode != 0:
        raise SystemExit(apply.stdout[-2000:])
    methods = {
        "unthrottled": "rm -f /var/log/nginx/access.log-2025010*",
        "throttled": "ionice -c3 nice -n 19 /usr/local/sbin/opsctl-logprune",
    }
    layout = "contiguous (fallocate)" if args.contiguous else "interleaved 64 KB appends"
    print(f"{args.gb:g} GB of expired logs in {args.files} files, {layout}, on {host.name}; "
          f"load: 4 clients GET {PATH}; latencies in ms")
    print(f"{'method':<12} {'base p50':>8} {'base p99':>8} {'del p50':>8} {'del p99':>8} {'fail':>6} {'delete s':>9}")
    try:
        for name, command in methods.items():
            plant(spec, host, args.gb, args.files, fragmented=not args.contiguous)
            base, during, took = measure(spec, host, command)
            print(row(name, base, during, took), flush=True)
    finally:
        if not args.keep_lab:
            fleet.down(args.lab, report=lambda msg: None)


if __name__ == "__main__":
    main()
