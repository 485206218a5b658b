from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import parse_duration

from opsctl.profile import ProfileError, parse_profile

GOOD = {
    "peak_qps": 640,
    "request_time": {"typical_ms": 80, "p99_ms": 400},
    "client_timeout_s": 10,
    "php_worker_memory_mb": 48,
    "window": {"start": "2026-11-11T00:00", "duration": "2h", "timezone": "Asia/Shanghai"},
}


def test_good_profile_parses_with_an_aware_window():
    profile = parse_profile(GOOD)
    assert profile.peak_qps == 640 and profile.p99_ms == 400
    window = profile.window
    assert window.start == datetime(2026, 11, 11, tzinfo=ZoneInfo("Asia/Shanghai"))
    assert window.end - window.start == timedelta(hours=2)
    assert window.prepare == timedelta(hours=1)  # the default margin
    assert window.protects(datetime(2026, 11, 10, 23, 30, tzinfo=ZoneInfo("Asia/Shanghai")))
    assert not window.protects(datetime(2026, 11, 10, 22, 30, tzinfo=ZoneInfo("Asia/Shanghai")))
    assert not window.protects(datetime(2026, 11, 11, 2, 0, tzinfo=ZoneInfo("Asia/Shanghai")))


def test_explicit_offset_wins_over_timezone():
    data = dict(GOOD, window=dict(GOOD["window"], start="2026-11-11T00:00+00:00"))
    assert parse_profile(data).window.start.utcoffset() == timedelta(0)


@pytest.mark.parametrize("change, message", [
    ({"peak_qps": "lots"}, "opsctl_event.peak_qps: expected a number"),
    ({"peak_qps": 0}, "opsctl_event.peak_qps: 0 is out of range"),
    ({"peak_qps": True}, "expected a number"),
    ({"client_timeout_s": 0.2}, "is not above the p99 request time"),
    ({"request_time": {"typical_ms": 500, "p99_ms": 400}}, "p99_ms: 400 is below typical_ms 500"),
    ({"request_time": {"typical_ms": 50}}, "request_time: missing required key 'p99_ms'"),
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"window": {"start": "soon", "duration": "2h", "timezone": "UTC"}}, "window.start: expected a date"),
    ({"window": {"start": "2026-11-11T00:00", "duration": "2 fortnights", "timezone": "UTC"}}, "window.duration"),
    ({"window": {"start": "2026-11-11T00:00", "duration": "2h", "timezone": "Mars/Olympus"}}, "unknown time zone"),
    ({"concurrency": 1.5}, "expected a whole number"),
])
def test_bad_profiles_name_the_key(change, message):
    with pytest.raises(ProfileError) as err:
        parse_profile(dict(GOOD, **change))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_required_key():
    data = {k: v for k, v in GOOD.items() if k != "php_worker_memory_mb"}
    with pytest.raises(ProfileError, match="missing required key 'php_worker_memory_mb'"):
        parse_profile(data)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("30m", 1800), ("1h30m", 5400), (45, 45), ("250ms", 0.25)])
def test_durations(text, seconds):
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "2 weeks", "h", "-5", None, True])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)
