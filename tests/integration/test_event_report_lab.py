"""`opsctl report` on a real lab balancer after real traffic: its per-minute counts by status
class, per upstream, and its upstream p99 per minute equal those computed here from the same log
lines read over SSH, and the lines themselves hold what the load tool sent (2xx, 404, and the
clients that gave up: 499); its HTML page opens in headless Chromium with its plot drawn."""

from __future__ import annotations

import base64
import json
import re
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone

import pytest

from opsctl.lab.load import run_load
from tests import browser
from tests.conftest import opsctl
from tests.labtools import ssh
from tests.logsynth import nearest_rank

pytestmark = pytest.mark.lab

LOGS = "/var/log/nginx"
TIMING_LOG = f"{LOGS}/report-timing.log"
KEEP = f"{LOGS}/report-kept"
DROPIN = "/etc/nginx/conf.d/zz-report-test.conf"
# This test's own format beside whatever the lb logs already (combined, or opsctl_timing when
# an earlier module hardened it): read by its definition from nginx -T.
OWN_FORMAT = '$msec $status "$host" "$upstream_addr" "$upstream_status" $request_time $upstream_response_time'
OWN = re.compile(r'^(\d+)\.\d{3} (\d{3}) "[^"]*" "([^"]*)" ')
COMBINED = re.compile(r'^\S+ - \S+ \[(\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4})\] "[^"]*" (\d{3}) ')
TAIL_TIMES = re.compile(r" (\d+\.\d{3}(?:(?:, | : )(?:\d+\.\d{3}|-))*)$")   # $upstream_response_time, last
CLASSES = {499: "499", 502: "502", 503: "503", 504: "504"}


def klass(status: int) -> str:
    return CLASSES.get(status) or {2: "2xx", 3: "3xx"}.get(status // 100, "other")


@pytest.fixture(scope="module")
def quiet_lb(lab):
    """The lb's access logs moved aside (restored afterwards) and this test's own log added."""
    lb = lab.by_role("lb")[0].name
    dropin = base64.b64encode(f"log_format report_timing '{OWN_FORMAT}';\naccess_log {TIMING_LOG} report_timing;\n"
                              .encode()).decode()
    ssh(lab, lb, f"mkdir {KEEP} && mv {LOGS}/*access* {KEEP}/ && : > {LOGS}/access.log && "
                 f"echo {dropin} | base64 -d > {DROPIN} && nginx -t -q && nginx -s reload", check=True)
    time.sleep(1)
    yield lab, lb
    ssh(lab, lb, f"rm -f {DROPIN} {TIMING_LOG} {LOGS}/*access*; mv {KEEP}/* {LOGS}/ && rmdir {KEEP} && "
                 "nginx -t -q && nginx -s reload", check=True)


def _minute(line: str) -> tuple[int, int] | None:
    """(minute epoch, status) of a line of either format, read by this test's own regexes."""
    own = OWN.match(line)
    if own:
        return int(own.group(1)) // 60 * 60, int(own.group(2))
    combined = COMBINED.match(line)
    if combined:
        epoch = datetime.strptime(combined.group(1), "%d/%b/%Y:%H:%M:%S %z").timestamp()
        return int(epoch) // 60 * 60, int(combined.group(2))
    return None


def test_report_counts_and_p99_per_minute_equal_the_log_lines(quiet_lb, tmp_path):
    lab, lb = quiet_lb
    address = lab.by_role("lb")[0].address
    start = time.time()
    fast = run_load(address, "/work.php?ms=5", seconds=20, concurrency=4, max_requests=200)
    missing = run_load(address, "/no-such-page.html", seconds=10, concurrency=2, max_requests=20)
    gave_up = run_load(address, "/work.php?ms=1500", seconds=10, concurrency=4, max_requests=4, timeout=0.3)
    assert (fast.ok, missing.non_2xx, gave_up.errors) == (200, 20, 4), (fast, missing, gave_up)
    time.sleep(1)   # the 499s are logged when nginx sees the client gone
    until = time.time() + 1
    since_text = datetime.fromtimestamp(start - start % 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    until_text = datetime.fromtimestamp(until, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    began = time.monotonic()
    proc = opsctl("report", "--inventory", lab.name, "--limit", lb, "--since", since_text, "--until", until_text,
                  "--format", "json", timeout=120)
    took = time.monotonic() - began
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)

    # The lines, read here: what the load tool sent is in this test's own log, line for line ...
    own = ssh(lab, lb, f"cat {TIMING_LOG}", check=True).stdout.splitlines()
    statuses = Counter(int(OWN.match(line).group(2)) for line in own)
    assert (statuses[200], statuses[404], statuses[499], len(own)) == (200, 20, 4, 224), statuses
    # ... and every log of the lb, counted per minute and status class by this test's regexes.
    lines = ssh(lab, lb, f"cat {LOGS}/*access* {TIMING_LOG}", check=True).stdout.splitlines()
    want: Counter = Counter()
    upstream_ms: dict[int, list[float]] = defaultdict(list)
    for line in lines:
        found = _minute(line)
        assert found, line
        want[found[0], klass(found[1])] += 1
        times = TAIL_TIMES.search(line)
        for item in re.split(", | : ", times.group(1)) if times else ():
            if item != "-":
                upstream_ms[found[0]].append(float(item) * 1000)

    host = result["read"][0]
    assert host["ok"] and host["unreadable"] == 0 and host["in_window"] == len(lines)
    assert TIMING_LOG in host["files"]
    minutes = result["fleet"]["fleet"]["minutes"]
    assert sum(m["requests"] for m in minutes) == len(lines)
    for row in minutes:
        assert row["status"] == {c: want[row["epoch"], c] for c in result["classes"]}, row["minute"]
        values = upstream_ms[row["epoch"]]
        assert row["upstream_ms"]["count"] == len(values)
        if values:
            # to the ms below 1 s, within half a percent above (the histogram's buckets)
            assert row["upstream_ms"]["p99"] == pytest.approx(nearest_rank(values, 0.99), rel=0.005, abs=0.5)
            assert row["upstream_ms"]["max"] == pytest.approx(max(values), rel=0.005, abs=0.5)
    # Per upstream: the two web hosts' addresses hold (at least) this test's log's proxied lines.
    webs = {f"{w.address}:80" for w in lab.by_role("web")}
    proxied = {addr: g for addr, g in result["upstreams"].items() if addr in webs}
    assert sum(g["status"]["2xx"] for g in proxied.values()) >= 200 and len(proxied) == 2
    assert sum(g["status"]["499"] for g in proxied.values()) >= 4
    print(f"report on {lb}: {len(lines)} lines in {len(minutes)} minute(s), {took:.1f} s; per minute "
          + ", ".join(f"{m['minute'][11:16]} {m['status']}" for m in minutes))

    text = opsctl("report", "--inventory", lab.name, "--limit", lb, "--since", since_text, "--until", until_text,
                  timeout=120, check=True).stdout
    assert "## Findings" in text and re.search(rf"- {lb}: \d+\.\d% of requests ended in 499 between", text), text

    # The same window as HTML: it opens in headless Chromium with no console error and draws the
    # fleet's plot (one host: no per-host plot) with this run's minutes.
    began = time.monotonic()
    page = tmp_path / "report.html"
    page.write_text(opsctl("report", "--inventory", lab.name, "--limit", lb, "--since", since_text, "--until",
                           until_text, "--format", "html", timeout=120, check=True).stdout)
    with browser.Chromium() as chrome:
        loaded = chrome.load(page, "({plots: document.querySelectorAll('.js-plotly-plot').length, "
                                    "bars: [...document.querySelectorAll('#plot-fleet .barlayer .point path')]"
                                    ".filter(p => p.getBoundingClientRect().height > 0).length})")
    assert loaded.errors == [] and loaded.found["plots"] == 1, (loaded.errors, loaded.found)
    assert loaded.found["bars"] >= sum(1 for m in minutes if m["requests"]), loaded.found
    (tmp_path / "report.png").write_bytes(loaded.png)
    print(f"report --format html: {page.stat().st_size} bytes, {time.monotonic() - began:.1f} s with the browser, "
          f"screenshot {tmp_path / 'report.png'}")
