#!/usr/bin/env python3
"""Issue 15: a 1 GB access log on a host, analysed where it is, with the host's CPU bounded.

Brings up a lab of its own (--lab, 1 balancer + 1 web host) and writes a ~1 GB opsctl_timing log
on the web host's own file system (under the lab root, beside nginx's own log, as yesterday's
rotation /var/log/nginx/access.log.1): a block of tests/logsynth.py lines spread over one hour
two hours ago (200, 499, 503, 504, proxied and static) made on the controller, then repeated on
the host until it reaches --gb. Then, for each --rate (default: opsctl's default, 4 MB/s, and
100 MB/s, which no host reaches, i.e. bounded by CPU alone):
  opsctl report --inventory <lab> --limit web1 --since <that hour> --until <its end> --format json
  opsctl profile suggest --inventory <lab> --limit web1 --since 1d --format json
and measures, on the host (a poller in the host's own network namespace reads /proc every 0.1 s):
the host script's CPU seconds (utime + stime of the `python3 -` process opsctl starts), its share
of one core over its lifetime, its nice value, its peak RSS (VmHWM); the bytes the host sent
back over its network interface meanwhile (SSH's own overhead and keepalives included: the
answer is aggregates, never a line); and the command's wall time on the controller, with the
machine's load average at the start. The log is deleted and the lab brought down at the end.

Measured (docs/architecture.md, "Access logs"; 1.00 GB, 5.34 M lines, machine load average 6-10):
report at --rate 4 (the default) 252 s wall, 41.3 s of the host's CPU = 17% of one core, nice 19,
peak RSS 22 MB, 313 KB sent back; profile suggest 253 s, 37.8 s, 15%, 14 MB, 37 KB; at --rate 100
report 97 s, 40.3 s = 42% (nice 19 on a busy machine), 16 MB, 310 KB; profile suggest 89 s, 36.2 s.

Usage: bench/report_1gb_bench.py [--lab hr2] [--gb 1.0] [--rates 4,100] [--keep-lab]
Needs root and 3 GB free where the labs live (/var/lib/opsctl).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsctl.lab import fleet, remote  # noqa: E402
from opsctl.paths import labs_dir  # noqa: E402
from tests.logsynth import timing_line  # noqa: E402

BIG = "/var/log/nginx/access.log.1"
BLOCK_LINES = 20_000
# Reads the host script's /proc figures until it ends (at most LIMIT s). Runs as `python3 -c`,
# so it never matches the `python3 -` it watches; only processes of this host's namespace count.
POLLER = r'''
import glob, json, os, sys, time
LIMIT, tck, me = float(sys.argv[1]), os.sysconf("SC_CLK_TCK"), os.readlink("/proc/self/ns/net")
def tx():
    rows = [l.split(":", 1) for l in open("/proc/net/dev").readlines()[2:]]
    return sum(int(r[1].split()[8]) for r in rows if r[0].strip() != "lo")
def scripts():
    out = {}
    for d in glob.glob("/proc/[0-9]*"):
        try:
            if open(d + "/cmdline", "rb").read() == b"python3\0-\0" and os.readlink(d + "/ns/net") == me:
                f = open(d + "/stat").read().rsplit(")", 1)[1].split()
                hwm = [l.split()[1] for l in open(d + "/status") if l.startswith("VmHWM")]
                out[d] = {"cpu_s": (int(f[11]) + int(f[12])) / tck, "nice": int(f[16]),
                          "start": int(f[19]) / tck, "rss_kb": int(hwm[0]) if hwm else 0}
        except OSError:
            pass
    return out
tx0, seen, start = tx(), {}, time.monotonic()
print("ready", flush=True)
while time.monotonic() - start < LIMIT:
    now = scripts()
    for pid, fig in now.items():
        fig["last"] = float(open("/proc/uptime").read().split()[0])
        seen[pid] = fig
    if seen and not now:
        break
    time.sleep(0.1)
print(json.dumps({"tx_bytes": tx() - tx0, "scripts": list(seen.values())}))
'''


def ssh(spec, host, command: str, stdin: bytes | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(remote.ssh_argv(spec, host, command), input=stdin, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"{host.name}: {command[:80]}: {proc.stderr.decode()[-500:]}")
    return proc.stdout.decode()


def block(start: int) -> bytes:
    """BLOCK_LINES lines over the hour from START: mostly proxied 200s, some 499 / 503 / 504, static files."""
    rng = random.Random(15)
    lines = []
    for epoch in sorted(start + rng.uniform(0, 3600) for _ in range(BLOCK_LINES)):
        rt = round(min(rng.lognormvariate(-2.5, 1.3), 30.0), 3)
        status = rng.choices((200, 499, 503, 504, 304), (90, 4, 3, 1, 2))[0]
        if status == 304:
            lines.append(timing_line(epoch, 0.0, status))
        else:
            lines.append(timing_line(epoch, rt, status, upstream="unix:/run/php/php8.2-fpm.sock",
                                     ustatus="-" if status == 499 else str(status), urt=f"{max(rt - 0.001, 0):.3f}"))
    return ("\n".join(lines) + "\n").encode()


def write_big_log(spec, host, start: int, gb: float) -> int:
    chunk = block(start)
    copies = max(1, round(gb * 1e9 / len(chunk)))
    ssh(spec, host, f"cat > /tmp/hr-block.log && for i in $(seq {copies}); do cat /tmp/hr-block.log; done > {BIG} "
                    f"&& rm /tmp/hr-block.log", stdin=chunk)
    return int(ssh(spec, host, f"stat -c %s {BIG}").strip())


def measured(spec, host, argv: list[str]) -> dict:
    """ARGV (an opsctl command) while the poller watches HOST."""
    poller = subprocess.Popen(remote.ssh_argv(spec, host, f"python3 -c '{POLLER}' 1500"), stdout=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True)
    assert poller.stdout is not None
    poller.stdout.readline()   # "ready": it counts bytes from here
    load = os.getloadavg()[0]
    wall = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "opsctl", *argv], cwd=REPO, capture_output=True, text=True, timeout=1800)
    wall = time.monotonic() - wall
    host_side = json.loads(poller.communicate(timeout=60)[0].strip().splitlines()[-1])
    if proc.returncode != 0 or len(host_side["scripts"]) != 1:
        sys.exit(f"opsctl {' '.join(argv)}: exit {proc.returncode}, {len(host_side['scripts'])} host scripts seen\n"
                 f"{proc.stderr[-1500:]}")
    script = host_side["scripts"][0]
    lifetime = script["last"] - script["start"]
    return {"wall_s": wall, "load": load, "cpu_s": script["cpu_s"], "core_pct": 100 * script["cpu_s"] / lifetime,
            "lifetime_s": lifetime, "nice": script["nice"], "rss_mb": script["rss_kb"] / 1024,
            "tx_kb": host_side["tx_bytes"] / 1024, "out": json.loads(proc.stdout)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="hr2")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the log (at most 2)")
    parser.add_argument("--rates", default="4,100", help="--rate values to run with, MB/s")
    parser.add_argument("--keep-lab", action="store_true")
    args = parser.parse_args()
    gb = min(args.gb, 2.0)
    free = shutil.disk_usage(labs_dir().parent).free
    if free < (gb + 2) * 1e9:
        sys.exit(f"only {free / 1e9:.1f} GB free under {labs_dir().parent}: need {gb + 2:.1f}")
    subprocess.run([sys.executable, "-m", "opsctl", "lab", "down", "--name", args.lab], cwd=REPO, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "opsctl", "lab", "up", "--name", args.lab, "--web", "1"], cwd=REPO, check=True,
                   capture_output=True)
    spec = fleet.load_spec(args.lab)
    web, inv = spec.by_role("web")[0], str(spec.inventory_dir)
    start = (int(time.time()) // 3600 - 2) * 3600
    since, until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(start)), time.strftime("%Y-%m-%dT%H:%M", time.gmtime(start + 3600))
    results = []
    try:
        t0 = time.monotonic()
        size = write_big_log(spec, web, start, gb)
        print(f"{web.name}:{BIG}: {size / 1e9:.2f} GB written on the host in {time.monotonic() - t0:.0f} s "
              f"({size // len(block(start)) * BLOCK_LINES:,} lines)")
        for rate in (float(r) for r in args.rates.split(",")):
            for name, argv in (("report", ["report", "-i", inv, "-l", web.name, "--since", since, "--until", until,
                                           "--rate", f"{rate:g}", "--format", "json"]),
                               ("profile suggest", ["profile", "suggest", "-i", inv, "-l", web.name, "--since", "1d",
                                                    "--rate", f"{rate:g}", "--format", "json"])):
                fig = measured(spec, web, argv)
                results.append((name, rate, fig))
                print(f"{name} --rate {rate:g}: {fig['wall_s']:.0f} s wall (load {fig['load']:.2f}), "
                      f"host script {fig['cpu_s']:.1f} s CPU = {fig['core_pct']:.0f}% of one core over "
                      f"{fig['lifetime_s']:.0f} s, nice {fig['nice']}, peak RSS {fig['rss_mb']:.0f} MB, "
                      f"{fig['tx_kb']:.1f} KB sent back", flush=True)
    finally:
        if not args.keep_lab:
            subprocess.run(remote.ssh_argv(spec, web, f"rm -f {BIG}"), capture_output=True, timeout=60)
            subprocess.run([sys.executable, "-m", "opsctl", "lab", "down", "--name", args.lab], cwd=REPO, capture_output=True)
    print(f"\n{'command':18}{'rate MB/s':>10}{'wall s':>8}{'load':>6}{'CPU s':>7}{'% core':>8}{'MB/CPU-s':>9}"
          f"{'nice':>5}{'RSS MB':>7}{'KB back':>8}")
    for name, rate, fig in results:
        print(f"{name:18}{rate:>10g}{fig['wall_s']:>8.0f}{fig['load']:>6.2f}{fig['cpu_s']:>7.1f}{fig['core_pct']:>8.0f}"
              f"{size / 1e6 / fig['cpu_s']:>9.1f}{fig['nice']:>5}{fig['rss_mb']:>7.0f}{fig['tx_kb']:>8.1f}")
    report = next((fig["out"] for name, _, fig in results if name == "report"), None)
    if report:
        read = report["read"][0]
        print(f"\nreport read {read['lines']:,} lines ({read['in_window']:,} in the window, {read['unreadable']} unreadable) "
              f"from {', '.join(read['files'])}; the host's answer says {read['elapsed_s']} s, {read['throttled_s']} s asleep")


if __name__ == "__main__":
    main()
