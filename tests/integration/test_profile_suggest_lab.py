"""`opsctl profile suggest` on real lab hosts: a synthetic log of known figures, rotated and
gzipped beside nginx's live log, gives those figures within 1%; after real traffic through the
balancer, into a log of the site's own format, its p99 is the one computed here from the same
log lines read over SSH."""

from __future__ import annotations

import base64
import gzip
import json
import re
import time

import pytest

from opsctl.lab.load import run_load
from tests.conftest import opsctl
from tests.labtools import ssh
from tests.logsynth import nearest_rank, synthetic

pytestmark = pytest.mark.lab

LOG = "/var/log/nginx/access.log"
TIMING_LOG = "/var/log/nginx/suggest-timing.log"
KEEP = "/var/log/nginx/suggest-kept"
DROPIN = "/etc/nginx/conf.d/zz-suggest-test.conf"
# The site's own format of this test: like no format the reader knows, so it is read by its
# definition from nginx -T; and $msec $request_time as opsctl_timing writes them (a hardened lab).
OWN_FORMAT = '$msec $request_time $status "$request" $upstream_response_time'
TIMES = re.compile(r'^\d{10}\.\d{3} (\d+\.\d{3}) \d{3} "|" \d{10}\.\d{3} (\d+\.\d{3}) "')
CHUNK = 60_000   # base64 characters per ssh command: an argument stays below Linux's 128 KiB


def suggest(lab, *args: str) -> dict:
    proc = opsctl("profile", "suggest", "--inventory", lab.name, "--limit", "web1", "--format", "json", *args,
                  timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def upload(lab, host: str, path: str, data: bytes) -> None:
    text = base64.b64encode(data).decode()
    ssh(lab, host, f": > {path}.b64", check=True)
    for at in range(0, len(text), CHUNK):
        ssh(lab, host, f"printf %s '{text[at:at + CHUNK]}' >> {path}.b64", check=True)
    ssh(lab, host, f"base64 -d {path}.b64 > {path} && rm {path}.b64", check=True)


@pytest.fixture(scope="module")
def quiet_web1(lab):
    """web1's access logs, rotated ones too (other modules rotate them), moved aside (nginx keeps
    writing to the live one until reopened) so the runs read only what this module writes; put
    back and reopened afterwards."""
    ssh(lab, "web1", f"mkdir {KEEP} && mv /var/log/nginx/*access* {KEEP}/ && : > {LOG}", check=True)
    yield lab
    ssh(lab, "web1", f"rm -f {DROPIN} {TIMING_LOG} /var/log/nginx/*access*; mv {KEEP}/* /var/log/nginx/ && "
                     f"rmdir {KEEP} && nginx -t -q && nginx -s reload", check=True)


def test_known_synthetic_log_gives_its_figures_within_one_percent(quiet_web1):
    lab = quiet_web1
    start = time.time() - 2 * 86400
    start -= start % 60
    synth = synthetic(start)
    half = len(synth.lines) // 2
    upload(lab, "web1", f"{LOG}.2.gz", gzip.compress(("\n".join(synth.lines[:half]) + "\n").encode()))
    upload(lab, "web1", f"{LOG}.1", ("\n".join(synth.lines[half:]) + "\n").encode())
    # As logrotate leaves them: last written at the end of the hour they hold.
    ssh(lab, "web1", f"touch -d @{int(start) + 3601} {LOG}.2.gz {LOG}.1", check=True)
    result = suggest(lab, "--since", "3d", "--expect", "10x")
    host = result["hosts"][0]
    assert host["files"] == [f"{LOG}.2.gz", f"{LOG}.1", LOG]
    assert host["in_window"] == len(synth.lines) and host["unreadable"] == 0
    assert host["peak_1s_qps"] == synth.peak_1s and host["peak_1m_requests"] == synth.peak_1m
    assert host["request_ms"]["p50"] == pytest.approx(synth.p50_ms, rel=0.01)
    assert host["request_ms"]["p99"] == pytest.approx(synth.p99_ms, rel=0.01)
    assert result["profile"]["peak_qps"] == synth.peak_1s * 10
    print(f"synthetic: p50 {host['request_ms']['p50']} / {synth.p50_ms:g} ms, p99 {host['request_ms']['p99']} / "
          f"{synth.p99_ms:g} ms, busiest second {host['peak_1s_qps']} / {synth.peak_1s}, minute "
          f"{host['peak_1m_requests']} / {synth.peak_1m}")
    assert result["profile"]["php_worker_memory_mb"] and host["fpm_workers"] >= 1
    # --since leaves the synthetic hour out: older lines are read, none counted.
    recent = suggest(lab, "--since", "1d")["hosts"][0]
    assert recent["request_ms"]["count"] == 0 and recent["files_skipped"] == [f"{LOG}.2.gz", f"{LOG}.1"]


def _p99_here(lines: list[str]) -> float:
    """The request times of the lines by a regex of this test's own, nearest rank (the live
    log's lines too when it is opsctl_timing: a hardened lab logs each request twice)."""
    times = [float(m.group(1) or m.group(2)) for m in (TIMES.search(line) for line in lines) if m]
    return nearest_rank(times, 0.99) * 1000


def test_p99_after_real_traffic_matches_the_log_lines(quiet_web1):
    lab = quiet_web1
    upload(lab, "web1", DROPIN, f"log_format suggest_timing '{OWN_FORMAT}';\naccess_log {TIMING_LOG} suggest_timing;\n".encode())
    ssh(lab, "web1", "nginx -t -q && nginx -s reload", check=True)
    time.sleep(1)
    lb = lab.by_role("lb")[0].address
    fast = run_load(lb, "/work.php?ms=20", seconds=20, concurrency=4, max_requests=240)
    slow = run_load(lb, "/work.php?ms=150", seconds=20, concurrency=4, max_requests=60)   # the tail
    assert (fast.ok, slow.ok) == (240, 60), (fast, slow)
    time.sleep(1)
    result = suggest(lab, "--since", "10m")
    lines = ssh(lab, "web1", f"cat {TIMING_LOG} {LOG}", check=True).stdout.splitlines()
    timed = [line for line in lines if TIMES.search(line)]
    assert len(timed) >= 300 // len(lab.by_role("web"))
    host = result["hosts"][0]
    assert host["request_ms"]["count"] == len(timed) and host["unreadable"] == 0
    here = _p99_here(timed)
    print(f"p99: profile suggest {host['request_ms']['p99']} ms, the {len(timed)} lines' own {here:g} ms")
    assert host["request_ms"]["p99"] == pytest.approx(here, abs=0.5)
