"""Whatever a host prints, it is that host's problem: never the fleet's, never the controller's (#11)."""

from __future__ import annotations

import json
import random
import tracemalloc
from datetime import datetime, timezone

import pytest

from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import first_firing, parse_cron

from opsctl.checks.run import EventOverride, HostOutcome, _evaluate_host, load_checks
from opsctl.inventory import Host
from opsctl.profile import parse_profile
from opsctl.sshexec import ExecResult

from tests.unit.test_check_facts import run_probe_here

EVENT = {"peak_qps": 100, "request_time": {"typical_ms": 100, "p99_ms": 300}, "client_timeout_s": 5,
         "php_worker_memory_mb": 40,
         "window": {"start": "2026-11-11T00:00", "duration": "2h", "timezone": "Asia/Shanghai"}}
HOST = Host(name="web1", address="10.0.0.1", port=22, user="root", groups=("web",), vars={"opsctl_event": EVENT},
            profile=parse_profile(EVENT))


@pytest.fixture(scope="module")
def engine():
    return load_checks()[0]


@pytest.fixture(scope="module")
def real_probe() -> dict:
    return run_probe_here()


def _evaluate(engine, stdout: str) -> tuple[HostOutcome, list]:
    outcome = HostOutcome(HOST.name, HOST.address, "ok")
    results = _evaluate_host(HOST, ExecResult(HOST.name, True, stdout), engine, EventOverride(), outcome)
    return outcome, results


@pytest.mark.parametrize("stdout", ["[1, 2]", '{"sections": []}', '"text"', "null", "42", '{"probe": 1}',
                                    '{"sections": "meta"}', "not json at all", "", "\x1b[2J{", "[" * 100000])
def test_output_that_is_not_a_probe_report_is_that_hosts_error(engine, stdout):
    outcome, results = _evaluate(engine, stdout)
    assert outcome.status == "error" and results == []
    assert outcome.error.startswith("probe output is not usable"), outcome.error


@pytest.mark.parametrize("sections", [{"meta": 5}, {"meta": {"out": 5}}, {"meta": {"out": ["a"]}},
                                      {"nginx_T": {"out": "", "rc": "x"}}, {"cron": None}, {"x": {"out": "y"}}])
def test_sections_of_the_wrong_type_are_section_errors_and_every_check_still_runs(engine, sections):
    outcome, results = _evaluate(engine, json.dumps({"probe": 1, "sections": sections}))
    assert outcome.status == "ok", outcome.error
    assert {r.check for r in results} >= {"probe-sections", "clock-sync", "tcp-tw-recycle"}


def _garbage(rng: random.Random):
    return rng.choice([
        None, 5, -1, 1e308, [], {}, ["x"], {"out": 7}, "", "\x00\x1b]0;pwned\x07", "0-3000000 * * * * root x",
        "=" * 5000, "a=b=c\n" * 100, "### script\n### cron\n", "*/0 * * * * root /etc/init.d/php-fpm restart",
        "pool [www]\nlisten.backlog = 99999999999999999999999\n", "MemTotal: 18446744073709551616 kB",
        "net/core/somaxconn:" + "9" * 400, "  \t\n", "nginx: [emerg] x", "{" * 50,
    ])


def test_fuzzed_probe_reports_never_raise(engine, real_probe):
    """300 reports: the real probe's report from this machine with sections replaced by garbage."""
    rng = random.Random(6)
    names = list(real_probe["sections"])
    for _ in range(300):
        report = json.loads(json.dumps(real_probe))
        for name in rng.sample(names, rng.randint(1, len(names))):
            section = report["sections"][name]
            if rng.random() < 0.3:
                report["sections"][name] = _garbage(rng)
            elif isinstance(section, dict):
                section["out"] = _garbage(rng)
                if rng.random() < 0.2:
                    section["rc"] = _garbage(rng)
        outcome, results = _evaluate(engine, json.dumps(report))
        assert outcome.status == "ok" or outcome.error, outcome
        assert all(r.status in ("pass", "warn", "fail", "error") for r in results)


@pytest.mark.parametrize("schedule", ["0-3000000 * * * *", "* 0-99999999 * * *", "*/0 * * * *", "60 * * * *",
                                      "* 24 * * *", "* * 0 * *", "* * 32 * *", "* * * 13 *", "* * * * 8",
                                      "*/-1 * * * *", "1-2-3 * * * *", "٣ * * * *", "0x10 * * * *",
                                      "1," * 5000 + "1 * * * *"])
def test_cron_fields_outside_their_limits_are_not_schedules(schedule):
    tracemalloc.start()
    try:
        assert parse_cron(schedule) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * 1024 * 1024, f"parsing {schedule[:30]!r} took {peak} bytes"


@pytest.mark.parametrize("schedule,fires", [("5 4 * * *", True), ("0 0-23/2 * jan mon-fri", True),
                                            ("*/60 * * * *", True), ("0 0 * * 7", True), ("@daily", True)])
def test_real_cron_schedules_still_parse(schedule, fires):
    assert (parse_cron(schedule) is not None) is fires


def test_a_planted_huge_cron_range_costs_the_check_nothing(engine, real_probe):
    report = json.loads(json.dumps(real_probe))
    report["sections"]["cron"] = {"rc": 0, "out": "### file /etc/cron.d/evil system\n"
                                               "0-3000000 * * * * root /etc/init.d/php-fpm restart\n"}
    tracemalloc.start()
    try:
        outcome, results = _evaluate(engine, json.dumps(report))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert outcome.status == "ok" and results
    assert peak < 64 * 1024 * 1024, f"evaluating one host took {peak / 2**20:.0f} MB"


def test_first_firing_of_a_refused_schedule_is_none():
    start = datetime(2026, 11, 11, tzinfo=timezone.utc)
    assert first_firing("0-3000000 * * * *", 0, start, start.replace(hour=2), timezone.utc) is None
