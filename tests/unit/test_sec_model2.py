"""Bad input at the edges of the models: the calendar's ends, odd YAML keys, deep nesting, empty
rules, capacity figures that are no figures, a probe's nonsense, huge durations and text a
terminal would misread. Each is one line naming the value, never a traceback (review 2)."""

from __future__ import annotations

import io
import json
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from ansible_collections.opsctl.fleet.plugins.plugin_utils import capacity, logrotate_vars, logslots
from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import CapacityError, derive
from opsctl.checks import output
from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import CatalogError, Result, first_firing, load_catalog, window_context
from opsctl.checks.run import (EventOverride, HostOutcome, Report, dumps, event_window, validate_override)
from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import problem
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import parse_duration
from opsctl.errors import OpsctlError
from opsctl.harden import plan_host, refuse_bad_input
from tests.unit.test_sec_input import _inventory, _one_line_error
from opsctl.inventory import Host
from ansible_collections.opsctl.fleet.plugins.plugin_utils import hosttext
from opsctl.profile import ProfileError, parse_profile
from opsctl.safetext import visible

from tests.conftest import opsctl

EVENT = {"peak_qps": 100, "request_time": {"typical_ms": 100, "p99_ms": 300}, "client_timeout_s": 5,
         "php_worker_memory_mb": 40}
FACTS = {"cpus": 2, "memory_mb": 4096, "php_version": "8.2", "host": "web1", "nofile_max": 1048576}
CHECK = {"id": "a", "title": "t", "severity": "warn", "failure_mode": "F1", "facts": [], "rule": "true",
         "observed": "o", "expected": "e", "remediation": "r"}


def _window(start: str, **more: str) -> dict:
    return {"start": start, "duration": "2h", "timezone": "UTC", **more}


def _host(name: str = "web1", **host_vars) -> Host:
    return Host(name=name, address="127.0.0.1", port=22, user="root", groups=("web",),
                vars={"opsctl_event": EVENT, **host_vars})


# --- 1. event windows at the ends of the calendar ----------------------------------------------

@pytest.mark.parametrize("window, words", [
    (_window("9999-12-31T23:00"), "ends after 9998-12-31"),
    (_window("9998-12-31T00:00", duration="3650d"), "ends after 9998-12-31"),
    (_window("0001-01-01T00:10"), "starts before 0002-01-01"),
    (_window("0003-01-01T00:00", prepare="3650d"), "starts before 0002-01-01"),
])
def test_a_window_at_the_ends_of_the_calendar_is_a_profile_error(window, words):
    with pytest.raises(ProfileError, match=f"opsctl_event.window.start: .*{words}"):
        parse_profile(dict(EVENT, window=window))


def test_a_window_well_inside_the_calendar_is_fine():
    window = parse_profile(dict(EVENT, window=_window("9998-12-01T00:00", prepare="30d"))).window
    assert window.end == datetime(9998, 12, 1, 2, tzinfo=window.start.tzinfo)


@pytest.mark.parametrize("start", ["9999-12-31T23:00", "0001-01-01T00:00"])
def test_check_event_at_the_ends_of_the_calendar_is_refused(start):
    with pytest.raises(OpsctlError, match="--event .*calendar"):
        validate_override(EventOverride(start, None))


def test_check_event_at_the_end_of_the_calendar_is_one_line(tmp_path):
    _one_line_error(opsctl("check", "-i", str(_inventory(tmp_path)), "--event", "9999-12-31T23:00"),
                    "--event '9999-12-31T23:00': the event window ends after 9998-12-31")


def test_check_event_with_a_profiles_long_margin_is_that_hosts_problem():
    profile = parse_profile(dict(EVENT, window=_window("2026-11-11T00:00", prepare="3650d")))
    with pytest.raises(ValueError, match="starts before 0002-01-01"):
        event_window(profile, EventOverride("0005-01-01T00:00", None))


@pytest.mark.parametrize("start", ["9999-12-31T23:00", "0001-01-01T00:00"])
def test_the_catalogs_event_window_refuses_the_ends_of_the_calendar(start):
    with pytest.raises(ValueError, match="calendar"):
        window_context(_window(start))


def test_a_cron_scan_at_the_end_of_the_calendar_does_not_overflow():
    start = datetime(9999, 12, 31, 0, 0, tzinfo=timezone.utc)
    assert first_firing("30 * * * *", 0, start, start + timedelta(hours=1), timezone.utc) == \
        start + timedelta(minutes=30)


@pytest.mark.parametrize("start", ["9999-12-31T23:00", "0001-01-01T00:00"])
def test_log_slots_refuse_an_event_at_the_ends_of_the_calendar(start):
    with pytest.raises(logslots.WindowError, match="opsctl_event.window.start: .*calendar"):
        logslots.event_span({"window": _window(start)})


# --- 2. keys of mixed types --------------------------------------------------------------------

@pytest.mark.parametrize("event", [
    {1: "x", "zz": 2, **EVENT},
    {None: "x", "zz": 2, **EVENT},
    dict(EVENT, request_time={1: "x", "zz": 2}),
    dict(EVENT, window={1: "x", "zz": 2}),
])
def test_mixed_type_keys_in_an_event_are_named(event):
    with pytest.raises(ProfileError, match="unknown key ('zz'|1|None) "):
        parse_profile(event)


def test_mixed_type_keys_in_a_catalog_check_are_named():
    text = yaml.safe_dump([{1: "x", "zz": 1, **CHECK}])
    with pytest.raises(CatalogError, match=r"check a: unknown key ('zz'|1) \(allowed: id, "):
        load_catalog([("user.yml", text)])


def test_log_slots_take_an_event_whose_keys_do_not_sort():
    event = {1: "x", "name": "sale", "window": _window("2026-11-11T04:00")}
    slot = logslots.fleet_slot("web1", {"web1": {"opsctl_event": event}}, {"start": "04:00"})
    assert slot.moved_for == "sale"


# --- 3. nesting deeper than the parsers recurse -----------------------------------------------

def test_a_deeply_nested_catalog_is_a_catalog_error():
    with pytest.raises(CatalogError, match="user.yml: .*nested too deeply"):
        load_catalog([("user.yml", "[" * 5000 + "]" * 5000)])


def test_a_deeply_nested_rule_is_a_catalog_error():
    text = yaml.safe_dump([dict(CHECK, rule="(" * 2000 + "1" + ")" * 2000)])
    with pytest.raises(CatalogError, match="check a: .*nested too deeply"):
        load_catalog([("user.yml", text)])


def test_a_deeply_nested_catalog_is_one_line(tmp_path):
    deep = tmp_path / "deep.yml"
    deep.write_text("[" * 5000 + "]" * 5000)
    _one_line_error(opsctl("check", "-i", str(_inventory(tmp_path / "inv")), "--catalog", str(deep)),
                    "nested too deeply")


def test_a_catalog_error_while_the_inventory_loads_is_still_one_line(tmp_path):
    """The inventory is parsed in a forked pool while the catalog compiles; a catalog error
    exited with that pool running, and its shutdown raced the interpreter's: now and then an
    "Exception ignored in: <module 'threading'>" traceback followed the error line."""
    deep = tmp_path / "deep.yml"
    deep.write_text("[" * 5000 + "]" * 5000)
    for run in range(12):   # a fresh inventory each time: a cached one loads without the pool
        _one_line_error(opsctl("check", "-i", str(_inventory(tmp_path / f"inv{run}")), "--catalog", str(deep)),
                        "nested too deeply")


# --- 4. an empty rule -------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["rule:\n", "rule: ''\n", "rule: '  '\n"])
def test_an_empty_rule_is_refused(text):
    body = yaml.safe_dump([{k: v for k, v in CHECK.items() if k != "rule"}]).replace("- ", "- " + text + "  ", 1)
    with pytest.raises(CatalogError, match="check a: rule is empty"):
        load_catalog([("user.yml", body)])


# --- 5. the capacity model's figures ----------------------------------------------------------

def test_a_fractional_cpu_quota_is_sized_as_whole_cpus():
    plan = derive(EVENT, dict(FACTS, cpus=0.5))
    assert "1 here" in plan["nginx.worker_processes"]["reason"]
    assert capacity._filter_error(EVENT, {"cpus": "0.5", "memory_mb": "4096", "host": "web1"}) == ""


@pytest.mark.parametrize("value", [float("inf"), float("nan"), float("-inf"), 10 ** 400],
                         ids=["inf", "nan", "-inf", "10**400"])
def test_peak_qps_that_is_no_figure_is_refused_with_its_bound(value):
    with pytest.raises(CapacityError, match=r"opsctl_event.peak_qps: .* out of range: .*at most 10000000"):
        derive(dict(EVENT, peak_qps=value), FACTS)


def test_the_profile_refuses_what_the_model_refuses():
    with pytest.raises(ProfileError, match="peak_qps"):
        parse_profile(dict(EVENT, peak_qps=10_000_001))


@pytest.mark.parametrize("value", [10 ** 5000, "9" * 5000, 10 ** 12], ids=["10**5000", "5000 nines", "10**12"])
def test_an_override_of_thousands_of_digits_is_refused_fast_and_short(value):
    started = time.monotonic()
    with pytest.raises(CapacityError) as caught:
        derive(EVENT, FACTS, {"php_fpm.pm_max_children": value})
    assert time.monotonic() - started < 1
    message = str(caught.value)
    assert message.startswith("opsctl_capacity_overrides['php_fpm.pm_max_children']: "
                              "expected a whole number from 0 to 999999999999")
    assert len(message) < 200


def test_the_inventory_gate_refuses_an_override_of_thousands_of_digits():
    found = problem("opsctl_capacity_overrides", {"php_fpm.pm_max_children": 10 ** 5000})
    assert found and "larger than any setting" in found and len(found) < 200


# --- 6. a probe that prints nonsense ----------------------------------------------------------

@pytest.mark.parametrize("facts, field", [(dict(FACTS, cpus=[1, 2]), "cpus"), (dict(FACTS, memory_mb="lots"), "memory_mb"),
                                          ([1, 2], "list")])
def test_unusable_probe_facts_are_that_hosts_failure_only(facts, field):
    bad, good = plan_host(_host("web1"), facts), plan_host(_host("web2"), FACTS)
    assert bad.error.startswith("web1: ") and field in bad.error and not bad.refused
    refuse_bad_input([bad, good])        # the fleet is not stopped
    assert good.plan and not good.error


def test_the_roles_facts_gate_names_the_host_and_the_field():
    message = capacity._filter_facts_error(dict(FACTS, cpus=[1, 2]))
    assert message.startswith("web1: ") and "cpus" in message
    assert capacity._filter_facts_error(dict(FACTS, cpus="2")) == ""


def test_the_capacity_role_fails_only_the_host_with_unusable_facts():
    tasks = yaml.safe_load(Path("ansible_collections/opsctl/fleet/roles/opsctl_capacity/tasks/plan.yml").read_text())
    names = [t["name"] for t in tasks]
    gate = next(t for t in tasks if "opsctl.fleet.capacity_facts_error" in json.dumps(t))
    assert not gate.get("any_errors_fatal")
    assert names.index(gate["name"]) < next(i for i, t in enumerate(tasks) if t.get("any_errors_fatal"))


# --- 7. durations of 200000 digits --------------------------------------------------------------

@pytest.mark.parametrize("text", ["9" * 20000, "9" * 200000 + "s", "9" * 200000 + ".5s"],
                         ids=["20000 digits", "200000 digits s", "200000 digits .5s"])
def test_a_huge_duration_is_refused_fast_and_echoed_short(text):
    started = time.monotonic()
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert time.monotonic() - started < 1
    assert len(str(caught.value)) < 200 and str(caught.value).endswith("…")


def test_the_catalogs_window_reads_durations_by_the_same_rule():
    with pytest.raises(ValueError, match="at most 40 characters"):
        window_context(_window("2026-11-11T00:00", duration="9" * 20000))
    with pytest.raises(ValueError, match="expected a duration like"):
        window_context(_window("2026-11-11T00:00", duration="2 hours"))


def test_huge_times_from_a_host_are_no_times_and_cost_nothing():
    assert hosttext.nginx_seconds("9" * 200000) is None
    assert hosttext.fpm_seconds("9" * 200000 + "s") is None
    assert hosttext.nginx_seconds("1m30s") == 90 and hosttext.fpm_seconds("30s") == 30


def test_huge_log_rotation_numbers_are_refused_short():
    found = logrotate_vars.problems({"opsctl_logrotate_keep_days": "9" * 200000})
    assert len(found) == 1 and len(found[0]) < 200
    assert len(logslots.window_error({"prune_delay_minutes": "9" * 200000})) < 200


@pytest.mark.parametrize("values", [
    {"opsctl_logrotate_backup_dir": "/var/" + "x" * 5000 + " y"},
    {"opsctl_logrotate_nginx_logs": "/var/log/" + "a b" * 5000},
    {"opsctl_logrotate_app_logs": ["/srv/" + "z" * 5000 + "\n"]},
    {"opsctl_logrotate_app_logs": [{"path": "/srv/app.log", "x" * 5000: 1}]},
])
def test_huge_log_rotation_paths_are_refused_short(values):
    found = logrotate_vars.problems(values)
    assert found and all(len(line) < 300 for line in found), [line[:300] for line in found]


def test_a_huge_duration_option_is_one_short_line(tmp_path):
    line = _one_line_error(opsctl("check", "-i", str(_inventory(tmp_path)), "--duration", "9" * 100000),
                           "--duration")
    assert len(line) < 300


# --- 8. what the outputs print ---------------------------------------------------------------

SURROGATE, BIDI = "web\udc80", "x\u202etxt.exe"


def _report() -> Report:
    hosts = [HostOutcome(SURROGATE, "10.0.0.1", "ok"), HostOutcome("down", "10.0.0.2", "error", error=BIDI)]
    results = [Result(host=SURROGATE, check="c", title=BIDI, severity="fail", status="fail", observed=BIDI,
                      expected=f"e\u2066{SURROGATE}", remediation="r\u200f", failure_mode="F1", item=BIDI)]
    return Report(hosts=hosts, results=results)


def test_visible_escapes_lone_surrogates_and_bidi_controls():
    assert visible(SURROGATE) == "web\\udc80"
    assert visible(BIDI) == "x\\u202etxt.exe"
    assert visible("a\u2066b\u2069c\u200e\u061c") == "a\\u2066b\\u2069c\\u200e\\u061c"
    assert visible("tab\tnew\nline, ümlaut, 中文") == "tab\tnew\nline, ümlaut, 中文"


def test_the_check_table_prints_lone_surrogates_and_bidi_as_escapes():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
    output.print_table(Console(file=stream, width=200), _report(), verbose=1)
    stream.flush()
    text = raw.getvalue().decode("utf-8")
    assert "\\udc80" in text and "\\u202e" in text and "\u202e" not in text


def test_json_output_is_valid_utf8_with_escapes_shown():
    text = dumps(_report())
    data = json.loads(text)
    json.dumps(data, ensure_ascii=False).encode("utf-8")      # no lone surrogate survives
    assert data["hosts"][0]["host"] == "web\\udc80" and data["results"][0]["observed"] == "x\\u202etxt.exe"


def test_junit_and_markdown_show_bidi_as_escapes():
    xml = output.junit(_report())
    ET.fromstring(xml)
    assert "\u202e" not in xml and "\\u202e" in xml
    md = output.markdown(_report())
    assert "\u202e" not in md and "\\udc80" in md
