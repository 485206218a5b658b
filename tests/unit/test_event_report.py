"""`opsctl report`'s figures against the same synthetic lines counted here independently: per
minute and status class, per vhost and upstream, and upstream / request time percentiles, for
opsctl_timing (with retried upstream lists), `combined`, and two hosts merged; the window, the
findings in numbers, the Markdown, and bad --since / --until."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter, defaultdict

import pytest

from opsctl import event_report
from opsctl.errors import OpsctlError
from opsctl.event_report_view import markdown
from opsctl.host_logs import HostFigures
from tests.logsynth import local_time, nearest_rank, timing_line

START = 1_796_000_000 - 1_796_000_000 % 60   # a whole minute
MINUTES = 5
A, B, C = "10.0.1.11:9000", "10.0.1.12:9000", "unix:/run/php/php-fpm.sock"
# (status, share): what the synthetic fleet answered
STATUSES = ((200, 70), (304, 5), (404, 4), (499, 8), (502, 3), (503, 4), (504, 4), (500, 2))
OPTS = event_report.ReportOptions(since=START, until=START + MINUTES * 60, rate_mb=64)


def klass(status: int) -> str:
    """The status class, written here again on purpose (not log_report's)."""
    if status in (499, 502, 503, 504):
        return str(status)
    return {2: "2xx", 3: "3xx"}.get(status // 100, "other")


class Expected:
    """What the report must show, from the generator's own values (no parsing)."""

    def __init__(self) -> None:
        self.minute_class: Counter = Counter()            # (minute, class)
        self.vhost_class: Counter = Counter()
        self.upstream_class: Counter = Counter()          # by the upstream that answered (last attempt)
        self.upstream_ms: dict[int, list[float]] = defaultdict(list)   # minute -> every attempt's ms
        self.request_ms: dict[int, list[float]] = defaultdict(list)
        self.upstream_attempts: Counter = Counter()       # addr -> attempts

    def add(self, epoch: float, status: int, vhost: str, attempts: list[tuple[str, float]], rt: float) -> None:
        minute = int(epoch) // 60 * 60
        self.minute_class[minute, klass(status)] += 1
        self.vhost_class[vhost, klass(status)] += 1
        self.upstream_class[attempts[-1][0] if attempts else "-", klass(status)] += 1
        self.request_ms[minute].append(rt * 1000)
        for addr, seconds in attempts:
            self.upstream_ms[minute].append(seconds * 1000)
            self.upstream_attempts[addr] += 1


def timing_log(seed: int = 3, per_minute: int = 400) -> tuple[list[str], Expected]:
    """opsctl_timing lines over MINUTES minutes: two vhosts, three upstreams, one request in
    ten retried to the next server (`a, b`), one in twenty redirected internally (`a : b`)."""
    rng = random.Random(seed)
    expected, lines = Expected(), []
    statuses = [s for s, share in STATUSES for _ in range(share)]
    for i in range(MINUTES * per_minute):
        epoch = START + rng.uniform(0, MINUTES * 60)
        status = rng.choice(statuses)
        vhost = rng.choice(("shop.test", "api.test"))
        rt = round(rng.uniform(0.001, 0.9), 3)
        kind = rng.random()
        if status == 503 and kind < 0.5:           # shed by nginx: no upstream tried
            attempts: list[tuple[str, float]] = []
        elif kind < 0.1:
            attempts = [(A, round(rng.uniform(0, 0.05), 3)), (B, round(rng.uniform(0, 0.8), 3))]
        elif kind < 0.15:
            attempts = [(rng.choice((A, B)), round(rng.uniform(0, 0.3), 3)), (C, round(rng.uniform(0, 0.3), 3))]
        else:
            attempts = [(rng.choice((A, B, C)), round(rng.uniform(0, rt), 3))]
        sep = ", " if kind < 0.1 else " : "
        upstream = sep.join(a for a, _ in attempts) or "-"
        urt = sep.join(f"{t:.3f}" for _, t in attempts) or "-"
        ustatus = sep.join(["502"] * (len(attempts) - 1) + [str(status)]) if attempts else "-"
        server = "_" if i % 2 else vhost        # a catch-all server: the Host header names the vhost
        lines.append(timing_line(epoch, rt, status, host=vhost, server=server, upstream=upstream,
                                 ustatus=ustatus, urt=urt))
        expected.add(epoch, status, vhost, attempts, rt)
    return lines, expected


def host_run(lines: list[str], tmp_path, opts: event_report.ReportOptions = OPTS, name: str = "access.log") -> dict:
    """The script opsctl sends, run here as a host runs it (python3 -)."""
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    proc = subprocess.run([sys.executable, "-"], input=event_report.host_script(opts, (str(path),)),
                          capture_output=True, timeout=120, check=True)
    return json.loads(proc.stdout)


def made(counts: list, upstream_ms: list = ()) -> dict:
    """A host's answer written by hand: these rows, nothing else read."""
    return {"counts": counts, "request_ms": [], "upstream_ms": list(upstream_ms), "lines": sum(r[-1] for r in counts),
            "in_window": sum(r[-1] for r in counts), "unreadable": 0, "files": [], "errors": [], "elapsed_s": 0,
            "throttled_s": 0}


def ms(value: float) -> int:
    return int(round(value))


@pytest.fixture(scope="module")
def timing(tmp_path_factory):
    lines, expected = timing_log()
    data = host_run(lines, tmp_path_factory.mktemp("timing"))
    return expected, event_report.build([HostFigures("web1", True, data=data)], OPTS, "lab")


def test_counts_per_minute_and_status_class_equal_the_lines(timing):
    expected, result = timing
    fleet = result["fleet"]["fleet"]
    assert [m["epoch"] for m in fleet["minutes"]] == [START + 60 * i for i in range(MINUTES)]
    for row in fleet["minutes"]:
        assert row["status"] == {c: expected.minute_class[row["epoch"], c] for c in result["classes"]}
        assert row["share_pct"]["499"] == round(100 * expected.minute_class[row["epoch"], "499"] / row["requests"], 2)
    assert fleet["requests"] == MINUTES * 400 == result["hosts"]["web1"]["requests"]


def test_per_vhost_and_per_upstream_equal_the_lines(timing):
    expected, result = timing
    assert set(result["vhosts"]) == {"shop.test", "api.test"}
    for vhost, group in result["vhosts"].items():
        assert group["status"] == {c: expected.vhost_class[vhost, c] for c in result["classes"]}
    assert set(result["upstreams"]) == {A, B, C, "-"}
    for addr, group in result["upstreams"].items():
        assert group["status"] == {c: expected.upstream_class[addr, c] for c in result["classes"]}
        # every attempt's time counts under the upstream it went to (a retried one's too)
        assert group["upstream_ms"]["count"] == expected.upstream_attempts[addr]


def test_upstream_and_request_percentiles_per_minute_equal_the_lines(timing):
    expected, result = timing
    for row in result["fleet"]["fleet"]["minutes"]:
        for figure, values in (("upstream_ms", expected.upstream_ms[row["epoch"]]),
                               ("request_ms", expected.request_ms[row["epoch"]])):
            got = row[figure]
            assert got["count"] == len(values)
            assert [got[q] for q in ("p50", "p90", "p99", "max")] == \
                [ms(nearest_rank(values, q)) for q in (0.5, 0.9, 0.99)] + [ms(max(values))]


def test_combined_lines_count_by_status_with_no_times(tmp_path):
    rng = random.Random(5)
    epochs = sorted(START + rng.uniform(0, 180) for _ in range(300))
    statuses = [rng.choice((200, 301, 499, 504, 404)) for _ in epochs]
    lines = [f'10.0.0.9 - - [{local_time(t)}] "GET /x?q=1 HTTP/1.1" {s} 10 "-" "curl"' for t, s in zip(epochs, statuses)]
    result = event_report.build([HostFigures("web1", True, data=host_run(lines, tmp_path))], OPTS)
    want = Counter((int(t) // 60 * 60, klass(s)) for t, s in zip(epochs, statuses))
    minutes = result["fleet"]["fleet"]["minutes"]
    assert len(minutes) == 3
    for row in minutes:
        assert row["status"] == {c: want[row["epoch"], c] for c in result["classes"]}
        assert row["upstream_ms"]["count"] == 0 and row["upstream_ms"]["p99"] is None
    assert list(result["vhosts"]) == ["-"] and list(result["upstreams"]) == ["-"]


def test_two_hosts_merge_exactly_into_the_fleet(tmp_path):
    lines, expected = timing_log(seed=7, per_minute=100)
    half = len(lines) // 2
    figures = [HostFigures("web1", True, data=host_run(lines[:half], tmp_path, name="a.log")),
               HostFigures("web2", True, data=host_run(lines[half:], tmp_path, name="b.log")),
               HostFigures("web3", False, error="unreachable: web3")]
    result = event_report.build(figures, OPTS)
    for row in result["fleet"]["fleet"]["minutes"]:
        assert row["status"] == {c: expected.minute_class[row["epoch"], c] for c in result["classes"]}
        values = expected.upstream_ms[row["epoch"]]
        assert row["upstream_ms"]["p99"] == ms(nearest_rank(values, 0.99))
    assert result["hosts"]["web1"]["requests"] + result["hosts"]["web2"]["requests"] == len(lines)
    assert [r["ok"] for r in result["read"]] == [True, True, False]
    assert "| web3 | unreachable: web3 |" in markdown(result)


def test_the_window_keeps_until_out_and_skips_nothing_else(tmp_path):
    lines, expected = timing_log(seed=9, per_minute=50)
    opts = event_report.ReportOptions(since=START + 60, until=START + 180, rate_mb=64)
    data = host_run(lines, tmp_path, opts)
    assert data["in_window"] == sum(n for (minute, _c), n in expected.minute_class.items() if START + 60 <= minute < START + 180)
    assert {row[0] for row in data["counts"]} == {START + 60, START + 120}


def test_findings_state_the_worst_stretch_in_numbers():
    counts = []
    for i in range(10):   # 10:00-10:09; 499s from the third minute to the ninth
        minute = START + 60 * i
        counts += [[minute, "shop.test", A, "2xx", 1000], [minute, "shop.test", A, "499", 75 if 2 <= i < 9 else 1]]
    data = made(counts, [[START + 120, "shop.test", A, {"4500": 3, "30": 97}]])
    opts = event_report.ReportOptions(since=START, until=START + 600)
    result = event_report.build([HostFigures("web3", True, data=data)], opts)
    at = event_report.clock
    assert (f"web3: 7.0% of requests ended in 499 between {at(START + 120)} and {at(START + 540)} (525 of 7525)"
            in result["findings"])
    assert f"web3: upstream response time p99 peaked at 4500 ms in the minute from {at(START + 120)} (max 4500 ms)" \
        in result["findings"]
    assert not [f for f in result["findings"] if "504" in f]
    # a stretch reaching the window's end ends there, not at the next whole minute
    cut = event_report.build([HostFigures("web3", True, data=data)],
                             event_report.ReportOptions(since=START + 150, until=START + 500))
    assert f"web3: 7.0% of requests ended in 499 between {at(START + 150)} and {at(START + 500)} (525 of 7525)" \
        in cut["findings"] and at(START + 500).count(":") == 2


def test_markdown_has_the_findings_and_tables_and_escapes_log_text(timing):
    _expected, result = timing
    text = markdown(result)
    assert "## Findings" in text and "## Fleet per minute" in text and "## Per upstream" in text
    for finding in result["findings"]:
        assert f"- {finding}" in text
    first = result["fleet"]["fleet"]["minutes"][0]
    assert f"| {first['minute'][11:16]} | {first['requests']} | {first['status']['2xx']} |" in text
    hostile = made([[START, "a|b\n<x>", "-", "2xx", 1]])
    assert "| a\\|b &lt;x> | 1 |" in markdown(event_report.build([HostFigures("w", True, data=hostile)], OPTS))


@pytest.mark.parametrize("since, until, want", [
    ("2026-12-06T10:00", "2026-12-06T11:00Z", (1796551200.0, 1796554800.0)),
    ("2026-12-06T18:00+08:00", None, (1796551200.0, 1796560000.0)),
    ("2h", "30m", (1796560000.0 - 7200, 1796560000.0 - 1800)),
])
def test_window_times(since, until, want):
    assert event_report.parse_window(since, until, now=1796560000.0) == want


@pytest.mark.parametrize("since, until, message", [
    ("10:00", None, "--since '10:00': expected a time like"),
    ("2026-13-01T00:00", None, "--since '2026-13-01T00:00': expected a time like"),
    ("1h", "2h", "--until '2h': must be after --since '1h'"),
    ("soon", None, "--since 'soon'"),
])
def test_bad_window_is_one_clear_error(since, until, message):
    with pytest.raises(OpsctlError, match="^" + message.replace("(", r"\(")):
        event_report.parse_window(since, until, now=1796560000.0)


def _sample(host: str, at: float, queue: int, overflows: float | None, close_wait: int) -> str:
    figures = {"listeners": [{"kind": "nginx", "address": "0.0.0.0:80", "queue": queue, "limit": 511},
                             {"kind": "php-fpm", "address": "/run/php/fpm.sock", "queue": 1, "limit": 4096}],
               "overflows_ps": overflows, "close_wait": close_wait}
    return json.dumps({"host": host, "time": at, "due": at, "figures": figures})


def test_the_watch_record_joins_the_timeline_per_host_and_minute(tmp_path):
    from opsctl.event_record import read_record

    queues = [3, 40, 511, 200, 7, 0]   # one sample every 20 s from START - 20: the first is outside
    lines = [_sample("web1", START - 20 + 20 * i, q, 12.5 if q == 511 else 0.0, 10 + i) for i, q in enumerate(queues)]
    lines += [json.dumps({"host": "web2", "time": START + 61, "state": "lost", "error": "timed out"}), ""]
    path = tmp_path / "watch.jsonl"
    path.write_text("\n".join(lines))
    record = read_record(str(path), START, START + 300)
    assert record["web1"] == [
        {"epoch": START, "samples": 3, "lost": 0, "queue_max": 511, "queue_limit": 511, "queue_at": "0.0.0.0:80",
         "overflows_ps_max": 12.5, "close_wait_max": 13},
        {"epoch": START + 60, "samples": 2, "lost": 0, "queue_max": 7, "queue_limit": 511, "queue_at": "0.0.0.0:80",
         "overflows_ps_max": 0.0, "close_wait_max": 15}]
    assert record["web2"][0]["lost"] == 1 and record["web2"][0]["samples"] == 0
    result = event_report.build([HostFigures("web1", True, data=made([[START, "-", "-", "2xx", 5]]))], OPTS, record=record)
    at = event_report.clock(START)
    assert f"web1: accept queue peaked at 511 of 511 (0.0.0.0:80) in the minute from {at}" in result["findings"]
    assert f"web1: the accept queue overflowed in 1 minute(s), at most 12.5/s in the minute from {at}" in result["findings"]
    assert f"| web1 | {at} | 3 | 511 | 511 | 0.0.0.0:80 | 12.5 | 13 | 0 |" in markdown(result)


def test_a_record_that_is_no_watch_record_is_one_clear_error(tmp_path):
    from opsctl.event_record import read_record

    path = tmp_path / "x.jsonl"
    path.write_text('{"host": "web1"}\n')
    with pytest.raises(OpsctlError, match=r"line 1 is no `opsctl watch --record` line"):
        read_record(str(path), START, START + 60)
    with pytest.raises(OpsctlError, match="cannot read it"):
        read_record(str(tmp_path / "missing"), START, START + 60)
