"""The check engine: catalog validation, rules, items, errors, cron schedules against a window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
import yaml

from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import (CatalogError, Engine, Unavailable, first_firing, load_catalog,
                                  window_context)
from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import Result

from opsctl.checks.run import EventOverride, Report, event_window, load_checks
from opsctl.profile import parse_profile

CHECK = {"id": "c", "title": "t", "severity": "fail", "failure_mode": "F1", "facts": ["x"],
         "rule": "facts.x < 10", "observed": "x = {{ facts.x }}", "expected": "< 10", "remediation": "fix"}


def catalog(*checks: dict) -> list:
    return load_catalog([("test.yml", yaml.safe_dump({"checks": list(checks)}))])


def test_rule_true_passes_false_takes_the_severity():
    engine = Engine(catalog(CHECK))
    assert engine.evaluate("h", {"facts": {"x": 3}})[0].status == "pass"
    failed = engine.evaluate("h", {"facts": {"x": 30}})[0]
    assert (failed.status, failed.observed, failed.expected, failed.remediation) == ("fail", "x = 30", "< 10", "fix")


def test_each_let_and_when():
    check = dict(CHECK, each="facts.pools", label="pool {{ item.name }}", let={"cap": "item.n / 0.1"},
                 rule="cap >= 100", observed="{{ cap | int }} qps", when="facts.pools")
    results = Engine(catalog(check)).evaluate("h", {"facts": {"pools": [{"name": "a", "n": 5}, {"name": "b", "n": 20}]}})
    assert [(r.item, r.status, r.observed) for r in results] == [("pool a", "fail", "50 qps"), ("pool b", "pass", "200 qps")]
    assert Engine(catalog(check)).evaluate("h", {"facts": {"pools": []}}) == []


def test_a_broken_fact_is_an_error_result_not_a_crash():
    results = Engine(catalog(CHECK)).evaluate("h", {"facts": {}})
    assert results[0].status == "error" and "x" in results[0].observed


def test_model_unavailable_is_reported():
    check = dict(CHECK, rule="facts.x <= expected['k'].value")
    result = Engine(catalog(check)).evaluate("h", {"facts": {"x": 1}, "expected": Unavailable("capacity model unavailable")})[0]
    assert (result.status, result.observed) == ("error", "capacity model unavailable")
    ok = Engine(catalog(check)).evaluate("h", {"facts": {"x": 1}, "expected": {"k": {"value": 2, "reason": "r"}}})[0]
    assert ok.status == "pass"


def test_the_sandbox_refuses_python_internals():
    check = dict(CHECK, rule="facts.__class__.__mro__[1].__subclasses__()")
    assert Engine(catalog(check)).evaluate("h", {"facts": {"x": 1}})[0].status == "error"


@pytest.mark.parametrize("change, message", [
    ({"severity": "bad"}, "severity must be warn or fail"),
    ({"failure_mode": "X1"}, "failure_mode"),
    ({"rule": "facts.x <"}, "TemplateSyntaxError"),
    ({"extra": 1}, "unknown key 'extra'"),
])
def test_catalog_errors_are_one_line(change, message):
    with pytest.raises(CatalogError, match=message) as info:
        catalog(dict(CHECK, **change))
    assert "test.yml: check c" in str(info.value) and "\n" not in str(info.value)


def test_missing_key_is_named():
    entry = {k: v for k, v in CHECK.items() if k != "remediation"}
    with pytest.raises(CatalogError, match="missing key 'remediation'"):
        catalog(entry)


def test_shipped_catalog_loads_and_covers_every_failure_mode():
    engine, _ = load_checks()
    checks = engine.checks
    assert {c.failure_mode for c in checks} >= {f"F{i}" for i in range(1, 8)}
    assert len({c.id for c in checks}) == len(checks)


def test_cron_firing_inside_a_window_across_time_zones():
    start = datetime(2026, 11, 11, 0, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
    # 00:10 in Shanghai is 16:10 UTC the day before: a UTC host's "10 16 * * *" hits the window.
    hit = first_firing("10 16 * * *", 0, start - timedelta(hours=1), start + timedelta(hours=2), timezone.utc)
    assert hit is not None and hit.astimezone(start.tzinfo).strftime("%H:%M") == "00:10"
    assert first_firing("25 6 * * *", 0, start - timedelta(hours=1), start + timedelta(hours=2), timezone.utc) is None
    # A host on Shanghai time running cron.daily at 00:00 (systemd's daily, 1 h accuracy).
    assert first_firing("0 0 * * *", 60, start, start + timedelta(hours=2), ZoneInfo("Asia/Shanghai")) is not None
    # The prepare margin counts: 23:30 the evening before is inside a 1 h prepare.
    assert first_firing("30 23 * * *", 0, start - timedelta(hours=1), start, ZoneInfo("Asia/Shanghai")) is not None
    assert first_firing("30 23 * * *", 0, start, start + timedelta(hours=2), ZoneInfo("Asia/Shanghai")) is None


def test_cron_fields_ranges_steps_and_weekdays():
    start = datetime(2026, 11, 11, 0, 0, tzinfo=timezone.utc)  # a Wednesday
    end = start + timedelta(hours=1)
    assert first_firing("*/20 0 * * 3", 0, start, end, timezone.utc) == start
    assert first_firing("0 0 * * 1-2", 0, start, end, timezone.utc) is None
    assert first_firing("@daily", 0, start, end, timezone.utc) == start
    assert first_firing("@reboot", 0, start, end, timezone.utc) is None


PROFILE = {"peak_qps": 100, "request_time": {"typical_ms": 100, "p99_ms": 300}, "client_timeout_s": 5,
           "php_worker_memory_mb": 32, "window": {"start": "2026-11-11T00:00", "duration": "2h",
                                                    "timezone": "Asia/Shanghai", "prepare": "30m"}}


def test_event_window_from_profile_and_override():
    profile = parse_profile(PROFILE)
    own = event_window(profile, EventOverride())
    assert own["start"].isoformat() == "2026-11-11T00:00:00+08:00" and own["prepare_s"] == 1800
    other = event_window(profile, EventOverride("2026-12-12T10:00+00:00", "4h"))
    assert other["start"].isoformat() == "2026-12-12T18:00:00+08:00" and other["end"] - other["start"] == timedelta(hours=4)
    bare = event_window(None, EventOverride("2026-12-12T10:00+08:00", None))
    assert bare["timezone"] == "UTC+0800" and bare["end"] - bare["start"] == timedelta(hours=2)
    assert event_window(None, EventOverride()) is None
    assert window_context(PROFILE["window"])["protected_start"] == own["protected_start"]


def _result(severity: str, status: str) -> Result:
    return Result("h", "c", "t", severity, status, "", "", "", "F1")


def test_fail_on_decides_readiness():
    warn_only = Report(hosts=[], results=[_result("warn", "warn")], fail_on="fail")
    assert warn_only.ready and not Report(hosts=[], results=warn_only.results, fail_on="warn").ready
    errored = Report(hosts=[], results=[_result("fail", "error")], fail_on="fail")
    assert not errored.ready


def test_an_expression_with_trailing_words_is_refused():
    with pytest.raises(CatalogError, match="check c"):
        catalog(dict(CHECK, rule="facts.x < 10 facts.y"))
