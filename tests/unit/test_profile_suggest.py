"""profile suggest's pure parts: histogram percentiles, busiest slots, the throttle, the
aggregation run on a synthetic log (here as on a host), and the proposed profile and YAML."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from ansible_collections.opsctl.fleet.plugins.plugin_utils import access_log, log_profile
from opsctl import profile_suggest
from opsctl.errors import OpsctlError
from opsctl.profile import parse_profile
from tests.logsynth import nearest_rank, synthetic

START = 1_796_000_000 - 1_796_000_000 % 60   # a whole minute


def test_buckets_are_exact_below_a_second_and_within_half_a_percent_above():
    assert [log_profile.bucket(ms) for ms in (0, 0.4, 7, 999.4)] == [0, 0, 7, 999]
    for ms in (1000, 1234, 9999, 12345, 987654):
        assert abs(log_profile.bucket(ms) - ms) <= ms * 0.005


def test_percentile_is_the_nearest_rank():
    values = [5, 1, 3, 3, 9, 7, 2, 8, 4, 6]
    counts = {v: values.count(v) for v in set(values)}
    for q in (0.1, 0.5, 0.9, 0.99, 1.0):
        assert log_profile.percentile(counts, q) == nearest_rank(values, q)
    assert log_profile.percentile({}, 0.5) is None
    assert log_profile.merge([{1: 2}, {"1": 1, "4": 1}]) == {1: 3, 4: 1}


def test_busiest_second_and_minute_are_aligned_and_earliest_on_ties():
    per_second = {START + 1: 3, START + 59: 4, START + 61: 5, START + 120: 5}
    assert log_profile.busiest(per_second, 1) == (5, START + 61)
    assert log_profile.busiest(per_second, 60) == (7, START)
    assert log_profile.busiest({}, 60) == (0, None)


def test_the_throttle_keeps_the_rate():
    now = [0.0]
    slept: list[float] = []
    throttle = log_profile.Throttle(1000, clock=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    for _ in range(10):
        throttle.account(500)
    assert now[0] == pytest.approx(5.0) and throttle.slept == pytest.approx(5.0)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """The synthetic hour split as logrotate leaves it: .2.gz, .1, and the live file."""
    synth = synthetic(START)
    folder = tmp_path_factory.mktemp("logs")
    third = len(synth.lines) // 3
    parts = [synth.lines[:third], synth.lines[third:2 * third], synth.lines[2 * third:]]
    with gzip.open(folder / "access.log.2.gz", "wt") as f:
        f.write("\n".join(parts[0]) + "\n")
    (folder / "access.log.1").write_text("\n".join(parts[1]) + "\nnot a log line\n")
    (folder / "access.log").write_text("\n".join(parts[2]) + "\n")
    return synth, folder


def test_rotated_siblings_are_found_oldest_first(logs):
    _, folder = logs
    base = folder / "access.log"
    for age, name in enumerate(("access.log", "access.log.1", "access.log.2.gz")):
        stamp = time.time() - age * 3600
        os.utime(folder / name, (stamp, stamp))
    (folder / "access.log.bak").write_text("")
    assert log_profile.with_rotated([str(base)]) == [str(folder / n) for n in ("access.log.2.gz", "access.log.1", "access.log")]


def _host_run(folder, since: float) -> dict:
    """The script opsctl sends, run here as a host runs it (python3 -)."""
    script = profile_suggest.host_script(since, 64, tuple(log_profile.with_rotated([str(folder / "access.log")])))
    proc = subprocess.run([sys.executable, "-"], input=script, capture_output=True, timeout=120, check=True)
    return json.loads(proc.stdout)


def test_the_host_script_gives_the_known_figures_within_one_percent(logs):
    synth, folder = logs
    data = _host_run(folder, START)
    assert data["lines"] == len(synth.lines) + 1 and data["unreadable"] == 1 and data["in_window"] == len(synth.lines)
    assert data["peak_1s"] == {"requests": synth.peak_1s, "at": START + 1800}
    assert data["peak_1m"]["requests"] == synth.peak_1m
    view = profile_suggest.host_view(profile_suggest.HostFigures("web1", True, data=data))
    assert view["request_ms"]["p50"] == pytest.approx(synth.p50_ms, rel=0.01)
    assert view["request_ms"]["p99"] == pytest.approx(synth.p99_ms, rel=0.01)
    assert synth.p99_ms > 1000   # the tail reaches the coarser buckets


def test_since_skips_older_lines(logs):
    synth, folder = logs
    data = _host_run(folder, START + 1801)
    assert data["in_window"] == sum(1 for t in synth.epochs if t >= START + 1801) > 0
    assert data["peak_1s"]["requests"] < synth.peak_1s


def test_the_suggestion_is_a_valid_profile_with_evidence(logs):
    synth, folder = logs
    data = _host_run(folder, START)
    data["fpm_rss_kb"] = [30_000] * 19 + [90_000]      # the mean would say 33 MB
    figures = [profile_suggest.HostFigures("web1", True, data=data),
               profile_suggest.HostFigures("web2", False, error="unreachable: web2")]
    result = profile_suggest.suggest(figures, profile_suggest.SuggestOptions(since_s=7 * 86400, expect=10))
    assert result["profile"]["peak_qps"] == synth.peak_1s * 10
    assert result["profile"]["php_worker_memory_mb"] == 30   # p95 of 20 workers: the 19th
    assert "web1" in result["evidence"]["peak_qps"] and "x10" in result["evidence"]["peak_qps"]
    block = yaml.safe_load(profile_suggest.yaml_block(result))
    profile = parse_profile(block["opsctl_event"])
    assert profile.peak_qps == synth.peak_1s * 10 and profile.p99_ms == result["profile"]["request_time"]["p99_ms"]


def test_combined_logs_say_their_times_are_unknown():
    reader = access_log.Reader()
    combined = '10.0.0.1 - - [06/Dec/2026:06:14:39 +0000] "GET / HTTP/1.1" 200 5 "-" "x"'
    agg = log_profile.Aggregate(0)
    for entry in reader.entries([combined] * 3):
        agg.add(entry)
    data = agg.summary()
    data.update(files=[], errors=[], lines=3, unreadable=0, throttled_s=0, elapsed_s=0, fpm_rss_kb=[])
    result = profile_suggest.suggest([profile_suggest.HostFigures("web1", True, data=data)],
                                     profile_suggest.SuggestOptions(since_s=60))
    assert result["profile"]["request_time"] == {"typical_ms": None, "p99_ms": None}
    assert "combined" in result["evidence"]["request_time"] and result["profile"]["peak_qps"] == 3


@pytest.mark.parametrize("text", ["0x", "-2", "ten", "nanx", "1e9x"])
def test_bad_expect_is_one_line(text):
    with pytest.raises(OpsctlError, match="--expect"):
        profile_suggest.parse_expect(text)
    assert profile_suggest.parse_expect("10x") == 10 and profile_suggest.parse_expect("2.5") == 2.5


@pytest.mark.parametrize("args", [["--rate", "0"], ["--rate", "nan"], ["--since", "3q"], ["--timeout", "0s"],
                                  ["--expect", "x"]])
def test_bad_options_are_one_line_and_exit_2(args):
    from tests.conftest import opsctl

    proc = opsctl("profile", "suggest", "--inventory", "nosuch-inventory", *args)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and args[0] in proc.stderr


def test_the_logs_nginx_names_relative_ones_below_its_prefix():
    config = ("http {\n    access_log /var/log/nginx/access.log opsctl_timing buffer=32k;\n"
              "    server { access_log logs/shop.log; access_log off; }\n"
              "    access_log syslog:server=10.0.0.1; access_log /var/log/$host.log;\n"
              "    access_log \"/srv/quoted.log\"; # access_log /old.log;\n}\n")
    assert log_profile.named_logs(config, "/usr/local/nginx/") == [
        "/var/log/nginx/access.log", "/usr/local/nginx/logs/shop.log", "/srv/quoted.log"]


def test_log_formats_of_nginx_T_are_read_whole():
    config = ("# configuration file /etc/nginx/nginx.conf:\n"
              "http {\n    log_format  main  '$remote_addr [$time_local] \"$request\" '\n"
              "                      '$status rt=$request_time';\n"
              "    log_format j escape=json \"{\\\"s\\\":$status}\";  # log_format old '$x';\n}\n")
    assert log_profile.log_formats(config) == [
        ("main", '$remote_addr [$time_local] "$request" $status rt=$request_time'), ("j", '{"s":$status}')]


def test_a_truncated_gz_counts_what_was_read_and_says_so(tmp_path):
    synth = synthetic(START, background=400, burst=10)
    whole = gzip.compress(("\n".join(synth.lines) + "\n").encode())
    path = tmp_path / "access.log.3.gz"
    path.write_bytes(whole[: len(whole) // 2])
    data = log_profile.scan([str(path)], log_profile.Aggregate(0), access_log.Reader(), log_profile.Throttle(0))
    assert 0 < data["in_window"] < len(synth.lines) and len(data["errors"]) == 1 and str(path) in data["errors"][0]
