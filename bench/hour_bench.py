#!/usr/bin/env python3
"""Issue 15 item 4, "that hour" on the lab: the same flash-sale burst through the balancer of a
stock fleet and of a hardened one, then `opsctl report` on both, side by side.

Brings up two labs of its own (1 balancer + 2 web hosts each, Debian flavour): PREFIX + "s", as
`opsctl lab up` leaves it (Debian's nginx and php-fpm: 60 s proxy / fastcgi timeouts, 5 workers
per pool, a listen queue of 4096, the `combined` access log), and PREFIX + "h", after `opsctl
harden --inventory <its inventory>` with the event profile below written into the lab
inventory's group_vars. Both fleets get the same 5 workers of 200 ms per web host (50 requests a
second for the two: what a pair of 2-core hosts with CPU-bound PHP carries), so only the
settings differ; the profile declares the burst's own request time and client timeout.

The burst, on each balancer, one lab after the other: new clients on new connections, GET
/work.php?ms=200 (the lab's slow PHP page), each giving up after --client-timeout (5 s, the lab
profile's: nginx logs that as 499) and replaced at once as a sale's users are: --quiet seconds
at half the capacity, --rush seconds at --factor x capacity, --quiet seconds at half again.
Then `opsctl report --inventory <lab inventory> --since/--until <the burst> --format json` and a
table: at the balancer (what the clients saw) requests, 2xx, 499 share, 502/503/504 share,
minutes without a 2xx, upstream p99 / max (the web hosts as the balancer saw them); what the
clients themselves counted (seconds of the burst without one 200); the report's findings.

Measured (docs/failure-modes.md, "That hour, reproduced on the lab"; two runs, load average 5-8 on
the shared 2-core machine), at the balancer, stock vs hardened: 2xx 4.5-4.6% vs 29.3-29.4% (99.5-
100% of what the pools serve); 499 61.4-62.4% vs 0; 502 24.9-25.3% (php-fpm's queue of 4096 full)
vs 0.0-0.1%; 503 0 vs 70.6-70.7%; other (500: the balancer out of worker_connections) 7.7-9.3% vs
0; minutes without a 2xx 3 of 4 vs 0 of 4; seconds without a 200 143 of 180 vs 0; upstream p99
unknown (combined log) vs 1,010-1,040 ms. --declare burst: the hardened fleet served all 25,499.

--declare burst declares the rush's own rate as the hardened fleet's peak instead: the model
then sizes the pool for it (Little's law), which the lab's sleeping PHP can run and a 2-core
host with CPU-bound PHP could not.

Usage: bench/hour_bench.py [--prefix hr1] [--rush 120] [--quiet 30] [--factor 4] [--client-timeout 5]
                           [--declare capacity|burst] [--keep-labs]
Needs root. Traffic goes only to the labs' own balancers; at most 300 s of burst per lab.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from opsctl.lab import fleet, remote  # noqa: E402
from opsctl.lab.load import Burst, Phase, flash_sale  # noqa: E402

SERVICE_MS = 200
WORKERS_PER_HOST = 5          # Debian's stock pm.max_children, and what EVENT sizes the pool to
PATH = f"/work.php?ms={SERVICE_MS}"
# Per web host: peak 20 qps x p99 0.25 s = 5 workers (Little's law), the stock pool's size
# (--declare burst: the rush's own rate instead).
EVENT = {"peak_qps": 20, "request_time": {"typical_ms": SERVICE_MS, "p99_ms": 250}, "php_worker_memory_mb": 32}
CONNECTIONS_PER_QPS = 10      # concurrent client connections declared per qps of peak


def opsctl(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "opsctl", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode not in (0, 1):
        sys.exit(f"opsctl {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return proc


def declare_event(inventory: Path, client_timeout: float, webs: int, peak_qps: float) -> None:
    """EVENT with PEAK_QPS per web host in the lab inventory's group_vars (web per host, lb for
    the whole fleet), keeping the rest of what `opsctl lab up` wrote there (window, balancers,
    smoke path)."""
    for group, scale in (("web", 1), ("lb", webs)):
        path = inventory / "group_vars" / f"{group}.yml"
        data = yaml.safe_load(path.read_text())
        event = dict(data["opsctl_event"], **EVENT, name="hour-bench", client_timeout_s=client_timeout)
        event.update(peak_qps=round(peak_qps * scale), concurrency=round(peak_qps * scale * CONNECTIONS_PER_QPS))
        data["opsctl_event"] = event
        path.write_text("# hour_bench.py: the burst's event profile\n" + yaml.safe_dump(data, sort_keys=False))


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def drive(lab: str, phases: list[Phase], client_timeout: float) -> dict:
    """The burst through LAB's balancer, then its report over the burst (and the clients' last
    timeouts after it)."""
    spec = fleet.load_spec(lab)
    lb = spec.by_role("lb")[0].address
    load = os.getloadavg()[0]
    started = time.time()
    burst = flash_sale(lb, PATH, phases, timeout=client_timeout)
    ended = time.time()
    time.sleep(3)   # nginx's buffered log (flush 250 ms) and the web hosts' last 499s
    since, until = int(started), int(ended) + 2
    report = json.loads(opsctl("report", "--inventory", str(spec.inventory_dir), "--since", iso(since),
                               "--until", iso(until), "--format", "json").stdout)
    return {"lab": lab, "burst": burst, "started": started, "ended": ended, "load": load,
            "window": (iso(since), iso(until)), "report": report, "lb": spec.by_role("lb")[0].name,
            "errors": {h.name: error_reasons(spec, h) for h in spec.hosts}, "settings": settings(spec)}


# nginx's error log by reason (the text before the first comma, without the connection number):
# why requests failed, counted here apart from the report's error-log events, as a check on them.
REASONS = (r"sed -nE 's/^[^[]*\[(alert|crit|error)\] [0-9#]+: (\*[0-9]+ )?([^,]*).*/\1 \3/p' "
           "/var/log/nginx/error.log | sort | uniq -c | sort -rn | head -n 4")


POOL = "grep -hE '^(pm.max_children|listen.backlog) =' /etc/php/8.2/fpm/pool.d/www.conf; "
NGINX = ("nginx -T 2>/dev/null | grep -oE '^\\s*(fastcgi_read_timeout|proxy_read_timeout|limit_conn) [^;]*' | sort -u")


def settings(spec) -> str:
    """What the web hosts' pool and every layer's nginx run with (nothing listed: nginx's defaults)."""
    out = []
    for host in (spec.by_role("lb")[0], spec.by_role("web")[0]):
        command = NGINX if host.role == "lb" else POOL + NGINX
        lines = [" ".join(line.split()) for line in remote.run(spec, host, command, timeout=60).stdout.splitlines()]
        out.append(f"{host.name}: {', '.join(line for line in lines if line) or 'nginx defaults'}")
    return "; ".join(out)


def error_reasons(spec, host) -> list[str]:
    out = remote.run(spec, host, REASONS, timeout=60).stdout
    return [" ".join(line.split()) for line in out.splitlines() if line.strip()]


def pct(part: int, total: int) -> str:
    return f"{100 * part / total:.1f}%" if total else "-"


def ms(value: int | None) -> str:
    return "unknown" if value is None else f"{value} ms"


def dead_seconds(burst: Burst) -> int:
    seconds = [0] * max(1, round(burst.seconds))
    for t in burst.ok_at:
        seconds[min(int(t), len(seconds) - 1)] += 1
    return sum(1 for n in seconds if n == 0)


def rows(run: dict) -> dict[str, str]:
    lb = run["report"]["hosts"].get(run["lb"])
    if lb is None:
        return {"requests at the balancer": "no lines read"}
    status, total = lb["status"], lb["requests"]
    dead = [m["minute"][11:16] for m in lb["minutes"] if m["requests"] and not m["status"]["2xx"]]
    webs = {h: f["status"]["499"] for h, f in run["report"]["hosts"].items() if h != run["lb"]}
    b: Burst = run["burst"]
    return {
        "requests at the balancer": str(total),
        "2xx": f"{status['2xx']} ({pct(status['2xx'], total)})",
        "499 (client gave up)": f"{status['499']} ({pct(status['499'], total)})",
        "502 / 503 / 504": " / ".join(f"{status[c]} ({pct(status[c], total)})" for c in ("502", "503", "504")),
        "3xx / other": f"{status['3xx']} / {status['other']} ({pct(status['other'], total)})",
        "minutes without a 2xx": f"{len(dead)} of {len(lb['minutes'])}" + (f" ({', '.join(dead)})" if dead else ""),
        "upstream p99 / max (balancer)": f"{ms(lb['upstream_ms']['p99'])} / {ms(lb['upstream_ms']['max'])}",
        "request p99 / max (balancer)": f"{ms(lb['request_ms']['p99'])} / {ms(lb['request_ms']['max'])}",
        "499 logged by the web hosts": ", ".join(f"{h} {n}" for h, n in sorted(webs.items())),
        "clients: attempts / 200 / 503": f"{b.attempts} / {b.ok} / {b.shed}",
        "clients: gave up / other / errors": f"{b.timeouts} / {b.other} / {b.errors}",
        "clients: seconds without a 200": f"{dead_seconds(b)} of {round(b.seconds)}",
        "load average (1 min) at the start": f"{run['load']:.2f}",
    }


def table(stock: dict, hardened: dict) -> None:
    left, right = rows(stock), rows(hardened)
    width = max(map(len, left)) + 2
    print(f"\n{'':{width}}{'stock':38}hardened")
    for key in left:
        print(f"{key:{width}}{left[key]:38}{right.get(key, '')}")
    for run in (stock, hardened):
        print(f"\n{run['lab']}: {run['settings']}")
        print(f"{run['lab']}: report --since {run['window'][0]} --until {run['window'][1]}; findings:")
        for finding in run["report"]["findings"]:
            print(f"  - {finding}")
        print(f"{run['lab']}: nginx error log, count, level and reason:")
        for host, reasons in run["errors"].items():
            for reason in reasons:
                print(f"  {host}: {reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prefix", default="hr1", help="lab names: PREFIX+s (stock), PREFIX+h (hardened)")
    parser.add_argument("--rush", type=float, default=120.0, help="seconds of the rush (at most 240)")
    parser.add_argument("--quiet", type=float, default=30.0, help="seconds at half capacity before and after")
    parser.add_argument("--factor", type=float, default=4.0, help="the rush's arrival rate as a multiple of capacity (at most 10)")
    parser.add_argument("--client-timeout", type=float, default=5.0)
    parser.add_argument("--declare", choices=("capacity", "burst"), default="capacity",
                        help="the hardened fleet's declared peak: what 5 workers carry (both fleets the same pool), "
                             "or the rush's own rate (the model then sizes a pool for it)")
    parser.add_argument("--keep-labs", action="store_true")
    args = parser.parse_args()
    stock_lab, hard_lab = args.prefix + "s", args.prefix + "h"
    capacity = 2 * WORKERS_PER_HOST * 1000 / SERVICE_MS
    phases = [Phase(args.quiet, capacity / 2), Phase(min(args.rush, 240), capacity * min(args.factor, 10)),
              Phase(args.quiet, capacity / 2)]
    print(f"burst: {' then '.join(f'{p.seconds:g} s at {p.rate:g}/s' for p in phases)}; capacity {capacity:g}/s; "
          f"clients give up after {args.client_timeout:g} s; GET {PATH}")
    try:
        for lab in (stock_lab, hard_lab):
            opsctl("lab", "down", "--name", lab)
            opsctl("lab", "up", "--name", lab)
        hard_inv = fleet.load_spec(hard_lab).inventory_dir
        peak = EVENT["peak_qps"] if args.declare == "capacity" else phases[1].rate / 2
        declare_event(hard_inv, args.client_timeout, webs=2, peak_qps=peak)
        t0 = time.monotonic()
        harden = opsctl("harden", "--inventory", str(hard_inv))
        if harden.returncode != 0:
            sys.exit(f"harden failed:\n{harden.stdout[-3000:]}")
        print(f"harden {hard_lab}: {time.monotonic() - t0:.0f} s")
        stock = drive(stock_lab, phases, args.client_timeout)
        if not args.keep_labs:
            opsctl("lab", "down", "--name", stock_lab)   # its pool still serves dead connections: not beside the next burst
        hardened = drive(hard_lab, phases, args.client_timeout)
    finally:
        if not args.keep_labs:
            for lab in (stock_lab, hard_lab):
                opsctl("lab", "down", "--name", lab)
    table(stock, hardened)


if __name__ == "__main__":
    main()
