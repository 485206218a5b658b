"""`opsctl report` on a real lab balancer after real traffic: its per-minute counts by status
class, per upstream, and its upstream p99 per minute equal those computed here from the same log
lines read over SSH, and the lines themselves hold what the load tool sent (2xx, 404, and the
clients that gave up: 499); its HTML page opens in headless Chromium with its plot drawn.
Then real error-log events: slow requests above pm.max_children on web1 (php-fpm's max_children
and `executing too slow` warnings, its slow log), a balancer server with a 1 s read timeout
(nginx's upstream timed out) and one whose first peer is a port of web2 where nothing listens,
as a stopped backend (the lb's connect() failed and `temporarily disabled`): the report's counts per minute x kind x
subject equal this test's own count of the lines in the hosts' real logs."""

from __future__ import annotations

import base64
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

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

# --- error-log events ------------------------------------------------------------------------------

SLOW_LOG = "/var/log/opsctl-test-www-slow.log"
POOL_DROPIN = "zz-report-test.conf"
LB_DROPIN = "/etc/nginx/conf.d/zz-report-errors.conf"
FPM_RELOAD = "for f in /run/php/php*-fpm.pid; do kill -USR2 $(cat $f); done"
SLOW_MS = 1200   # over the pool's 1 s request_slowlog_timeout and the lb server's 1 s proxy_read_timeout
# This test's own reading of the lines: nginx's and php-fpm's timestamps, the kinds, the subject.
NGINX_EVENT = re.compile(r"^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[\w+\] .*?(upstream timed out|connect\(\) failed|"
                         r"upstream server temporarily disabled).*, upstream: \"\w+://([^/\"]+)")
NGINX_KIND = {"upstream timed out": "upstream_timed_out", "connect() failed": "upstream_connect_failed",
              "upstream server temporarily disabled": "upstream_disabled"}
SHED_EVENT = re.compile(r'^(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[\w+\] \d+#\d+: \*\d+ limiting connections by zone "([^"]+)"')
FPM_EVENT = re.compile(r"^\[(\d\d-\w{3}-\d{4} \d\d:\d\d:\d\d)\] WARNING: \[pool (\w+)\] (?:server reached pm\.max_children|"
                       r"child \d+, script .* (executing too slow))")
SLOW_HEAD = re.compile(r"^\[(\d\d-\w{3}-\d{4} \d\d:\d\d:\d\d)\]  \[pool (\w+)\] pid \d+$")


def _events_in(lab, host: str, since: float, until: float) -> Counter:
    """(minute, kind, subject) -> count of this host's nginx error log, php-fpm log and this
    test's slow log, read over SSH and counted here; local times by the host's own offset."""
    out = ssh(lab, host, f"date +%z; cat /var/log/nginx/error.log /var/log/php*-fpm.log {SLOW_LOG} 2>/dev/null; true",
              check=True).stdout.splitlines()
    offset = datetime.strptime(out[0], "%z").utcoffset() or timedelta(0)
    found: Counter = Counter()

    def count(stamp: str, layout: str, kind: str, subject: str) -> None:
        epoch = (datetime.strptime(stamp, layout) - offset).replace(tzinfo=timezone.utc).timestamp()
        if since <= epoch < until:
            found[int(epoch) // 60 * 60, kind, subject] += 1

    for line in out[1:]:
        if m := NGINX_EVENT.match(line):
            count(m.group(1), "%Y/%m/%d %H:%M:%S", NGINX_KIND[m.group(2)], m.group(3))
        elif m := SHED_EVENT.match(line):
            count(m.group(1), "%Y/%m/%d %H:%M:%S", "shed", f"zone {m.group(2)}")
        elif m := FPM_EVENT.match(line):
            count(m.group(1), "%d-%b-%Y %H:%M:%S", "slow_warning" if m.group(3) else "max_children", m.group(2))
        elif m := SLOW_HEAD.match(line):
            count(m.group(1), "%d-%b-%Y %H:%M:%S", "slowlog", m.group(2))
    return found


def _get(url: str, results: list) -> None:
    try:
        urllib.request.urlopen(url, timeout=10).read()
        results.append(200)
    except urllib.error.HTTPError as exc:
        results.append(exc.code)
    except OSError as exc:   # no answer at all: the assertion shows it
        results.append(str(exc))


def _listening(address: str, port: int, seconds: float = 5) -> None:
    """Until ADDRESS:PORT accepts (nginx -s reload returns before the master opens a new listener)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{address}:{port} not listening after {seconds} s"
            time.sleep(0.05)


def _provoke(lab, lb, web1, web2, children: int) -> None:
    """CHILDREN + 1 slow requests at once on web1, and through a server the lb gets for this
    test (its error log at `warn`: stock `error` leaves out `upstream server temporarily
    disabled`): two that wait 1 s for web1, four to a pair whose first server is a port of web2
    where nothing listens (a stopped backend: refused, marked failed, retried on web1), three at
    once where limit_conn lets one through (two shed: 503)."""
    server = (f"error_log /var/log/nginx/error.log warn;\n"
              f"upstream report_pair {{ server {web2.address}:81; server {web1.address}:80; }}\n"
              f"limit_conn_zone $server_port zone=report_shed:1m;\n"
              f"server {{ listen 8081;\n  location /wait/ {{ proxy_pass http://{web1.address}:80/; proxy_read_timeout 1s; }}\n"
              f"  location /pair/ {{ proxy_pass http://report_pair/; }}\n"
              f"  location /shed/ {{ limit_conn report_shed 1; proxy_pass http://{web1.address}:80/; }}\n}}\n")
    ssh(lab, lb.name, f"echo {base64.b64encode(server.encode()).decode()} | base64 -d > {LB_DROPIN} && "
                      "nginx -t -q && nginx -s reload", check=True)
    try:
        _listening(lb.address, 8081)
        through_lb: list = []
        paths = [f"/wait/work.php?ms={SLOW_MS}"] * 2 + ["/pair/work.php?ms=5"] * 4 + [f"/shed/work.php?ms={SLOW_MS}"] * 3
        clients = [threading.Thread(target=_get, args=(f"http://{lb.address}:8081{path}", through_lb)) for path in paths]
        for client in clients:
            client.start()
        busy = run_load(web1.address, f"/work.php?ms={SLOW_MS}", seconds=15, concurrency=children + 1,
                        max_requests=children + 1, timeout=10)
        for client in clients:
            client.join()
    finally:
        ssh(lab, lb.name, f"rm -f {LB_DROPIN} && nginx -t -q && nginx -s reload", check=True)
    # /shed/: one of three at a time, the other two refused by limit_conn (503)
    assert busy.ok == children + 1 and sorted(through_lb, key=str) == [200] * 5 + [503] * 2 + [504] * 2, (busy, through_lb)


def test_report_error_log_events_equal_the_lines(lab):
    lb, web1, web2 = lab.by_role("lb")[0], *lab.by_role("web")[:2]
    start = time.time()
    pool_d = ssh(lab, web1.name, "ls -d /etc/php/*/fpm/pool.d | head -n 1", check=True).stdout.strip()
    children = 4
    try:
        # web1's pool www (whatever an earlier module made of it): dynamic with 4 workers, all
        # started up front (php-fpm checks its pools once a second: spawning would lag the load),
        # tracing requests over 1 s.
        settings = (f"[www]\\npm = dynamic\\npm.max_children = {children}\\npm.start_servers = {children}\\n"
                    f"pm.min_spare_servers = 1\\npm.max_spare_servers = {children}\\nrequest_slowlog_timeout = 1s\\n"
                    f"slowlog = {SLOW_LOG}\\n")
        ssh(lab, web1.name, f"printf '{settings}' > {pool_d}/{POOL_DROPIN} && $(ls /usr/sbin/php-fpm* | head -n 1) -t "
                            f"2>/dev/null && {FPM_RELOAD} && sleep 1", check=True)
        _provoke(lab, lb, web1, web2, children)
        # The report while the slow log is still configured: php-fpm -tt names it.
        until = time.time() + 1
        since_text = datetime.fromtimestamp(start - start % 60, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        until_text = datetime.fromtimestamp(until, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        began = time.monotonic()
        proc = opsctl("report", "--inventory", lab.name, "--since", since_text, "--until", until_text,
                      "--format", "json", timeout=120)
        took = time.monotonic() - began
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = json.loads(proc.stdout)
        since, until = start - start % 60, float(int(until))
        reported: dict[str, Counter] = defaultdict(Counter)
        for row in result["events"]["rows"]:
            reported[row["host"]][row["epoch"], row["kind"], row["subject"]] += row["count"]
        hosts = (lb.name, web1.name, web2.name)
        with ThreadPoolExecutor(3) as pool:
            counted = dict(zip(hosts, pool.map(lambda h: _events_in(lab, h, since, until), hosts)))
        for host in hosts:
            assert reported[host] == counted[host], host
    finally:
        ssh(lab, web1.name, f"rm -f {pool_d}/{POOL_DROPIN} {SLOW_LOG} && {FPM_RELOAD}", check=True)
    read = {r["host"]: r for r in result["events"]["read"]}
    assert "/var/log/nginx/error.log" in read[lb.name]["files"] and SLOW_LOG in read[web1.name]["files"]
    assert read[lb.name]["unreadable"] == read[web1.name]["unreadable"] == 0
    lb_kinds = {(kind, subject) for _m, kind, subject in reported[lb.name]}
    assert {("upstream_timed_out", f"{web1.address}:80"), ("upstream_connect_failed", f"{web2.address}:81"),
            ("upstream_disabled", f"{web2.address}:81"), ("shed", "zone report_shed")} <= lb_kinds, lb_kinds
    web_kinds = {kind for _m, kind, subject in reported[web1.name] if subject == "www"}
    assert {"max_children", "slow_warning", "slowlog"} <= web_kinds, web_kinds
    findings = [f for f in result["findings"] if "pm.max_children" in f or "nginx marked" in f]
    assert any(f.startswith(f"{web1.name}: php-fpm pool www reached pm.max_children ({children})") for f in findings)
    assert any(f.startswith(f"{lb.name}: nginx marked {web2.address}:81 failed ") for f in findings), findings
    print(f"report events in {took:.1f} s: " + "; ".join(
        f"{host} " + ", ".join(f"{k}/{s}={n}" for (_m, k, s), n in sorted(c.items())) for host, c in reported.items())
        + "\n" + "\n".join(findings))
