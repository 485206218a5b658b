"""Rotation slots: spread per balancer pool, deterministic, never inside an event window."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from ansible_collections.opsctl.fleet.plugins.plugin_utils.logslots import event_span, fleet_slot, host_local, parse_window, pool_peers, slot_for


UTC = ZoneInfo("UTC")
BEHIND_LB = [{"host": "lb1", "type": "nginx", "upstream": "web"}]


def event(start: str, duration: str = "2h", tz: str = "UTC", prepare: str = "1h") -> dict:
    return {"name": "sale", "window": {"start": start, "duration": duration, "timezone": tz, "prepare": prepare}}


def fleet(n: int, ev: dict | None = None) -> dict:
    hosts = {f"web{i}": {"opsctl_balancers": BEHIND_LB, "opsctl_event": ev} for i in range(1, n + 1)}
    hosts["lb1"] = {"opsctl_balancers": None, "opsctl_event": ev}
    return hosts


def test_hosts_behind_one_balancer_get_distinct_evenly_spread_minutes():
    hosts = fleet(6)
    window = {"start": "04:00", "minutes": 60, "timezone": "UTC"}
    slots = [fleet_slot(f"web{i}", hosts, window) for i in range(1, 7)]
    assert [s.rotate for s in slots] == ["04:00", "04:10", "04:20", "04:30", "04:40", "04:50"]
    assert all(s.prune == (datetime.strptime(s.rotate, "%H:%M") + timedelta(minutes=30)).strftime("%H:%M")
               for s in slots)
    # Deterministic: the same inputs give the same slot.
    assert fleet_slot("web4", hosts, window) == slots[3]
    # The balancer is its own pool.
    assert fleet_slot("lb1", hosts, window).pool_size == 1


def test_pools_are_hosts_with_the_same_balancers():
    balancers = {"a": BEHIND_LB, "b": BEHIND_LB, "c": [{"host": "lb2"}], "d": None}
    assert pool_peers("b", balancers) == ["a", "b"]
    assert pool_peers("c", balancers) == ["c"]


def test_window_moves_clear_of_an_event_including_its_prepare_margin():
    # Sale 05:00-07:00 UTC, prepare 1h: 04:00-07:00 protected; window 04:00 + 60 + 30 clashes.
    hosts = fleet(3, event("2026-11-11T05:00"))
    slot = fleet_slot("web1", hosts, {"start": "04:00", "minutes": 60, "timezone": "UTC"})
    assert slot.moved_for == "sale"
    assert slot.window == "07:05-08:05"
    span = event_span(event("2026-11-11T05:00"))
    for name in ("web1", "web2", "web3"):
        s = fleet_slot(name, hosts, {"start": "04:00", "minutes": 60, "timezone": "UTC"})
        for hhmm in (s.rotate, s.prune):
            moment = datetime.fromisoformat(f"2026-11-11T{hhmm}").replace(tzinfo=UTC)
            assert not (span.start <= moment < span.end)


def test_midnight_sale_in_another_time_zone():
    # 00:00 Asia/Shanghai = 16:00 UTC the day before; a 15:30 UTC window must move.
    ev = event("2026-11-11T00:00", tz="Asia/Shanghai")
    slot = fleet_slot("web1", fleet(2, ev), {"start": "15:30", "minutes": 30, "timezone": "UTC"})
    assert slot.moved_for == "sale" and slot.window.startswith("18:05")
    # Another night's 04:00 window is untouched.
    assert fleet_slot("web1", fleet(2, ev), {"start": "04:00", "minutes": 60, "timezone": "UTC"}).moved_for == ""


def test_a_rotation_ten_minutes_after_midnight_fails_for_a_midnight_sale():
    ev = event("2026-11-11T00:00", prepare="0s")
    slot = fleet_slot("web1", fleet(1, ev), {"start": "00:10", "minutes": 10, "timezone": "UTC"})
    assert slot.moved_for == "sale" and slot.rotate == "02:05"


def test_too_many_hosts_for_the_window_is_an_error():
    with pytest.raises(ValueError, match="widen"):
        slot_for("web1", [f"web{i}" for i in range(1, 12)], parse_window({"minutes": 10}), [])


@pytest.mark.parametrize("raw", [{"start": "25:00"}, {"start": "04:00", "minutes": 0}])
def test_bad_windows(raw):
    with pytest.raises(ValueError):
        parse_window(raw)


def test_host_local_time_follows_the_host_offset():
    assert host_local("04:00", "UTC", "+0800") == {"hour": 12, "minute": 0}
    assert host_local("04:30", "UTC", "-0530") == {"hour": 23, "minute": 0}
    assert host_local("12:00", "Asia/Shanghai", "+0000") == {"hour": 4, "minute": 0}


@pytest.mark.parametrize("raw, message", [
    ("04:00", "expected a mapping"),                                   # used to be an AttributeError
    ({"start": "04:00", "prune_delay_minutes": -120}, "prune_delay_minutes"),  # used to prune early
    ({"prune_delay_minutes": 0}, "prune_delay_minutes"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),               # used to pass the plan
    ({"timezone": "../../etc/passwd"}, "unknown time zone"),
    ({"start": "4"}, "expected a time HH:MM"),
    ({"start": "04:00:00"}, "expected a time HH:MM"),
    ({"minutes": "sixty"}, "minutes"),
    ({"minutes": True}, "minutes"),
    ({"length": 60}, "unknown key 'length'"),
])
def test_bad_windows_say_which_key_in_one_line(raw, message):
    with pytest.raises(ValueError, match=message) as caught:
        parse_window(raw)
    assert "\n" not in str(caught.value)


def test_windows_from_text_inventories():
    window = parse_window({"start": "4:05", "minutes": "90", "prune_delay_minutes": "15", "timezone": "Asia/Shanghai"})
    assert (window.start.hour, window.start.minute, window.minutes, window.prune_delay) == (4, 5, 90, 15)


def test_event_durations_are_read_by_opsctl_durations():
    span = event_span(event("2026-11-11T05:00", duration="1h30m", prepare="90s"))
    assert span.end - span.start == timedelta(minutes=91, seconds=30)
    with pytest.raises(ValueError, match="negative|expected a duration"):
        event_span(event("2026-11-11T05:00", duration="-2h"))
