"""Issue #12, each rule once: every reader of a duration, an event window or a cron line agrees.

The same raw value goes through each real path (the CLI's profile, `opsctl check`'s window, the
opsctl_preflight role's filter, the opsctl_logrotate role's slot code; the opsctl_lifecycle
role's cron filter and the check catalog's cron checks) and must come out the same, or be
refused by every one of them.
"""

from __future__ import annotations

import ast
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml

from ansible_collections.opsctl.fleet.plugins.filter import lifecycle_cron
from ansible_collections.opsctl.fleet.plugins.plugin_utils import check_engine, durations, hosttext, logslots, probe_facts

from opsctl.checks.run import EventOverride, event_window, load_checks
from opsctl.profile import parse_profile

ROOT = Path(__file__).resolve().parents[2]
COLLECTION = ROOT / "ansible_collections/opsctl/fleet"
EVENT = {"peak_qps": 100, "request_time": {"typical_ms": 50, "p99_ms": 300}, "client_timeout_s": 10,
         "php_worker_memory_mb": 40}
WINDOW = {"start": "2026-11-11T00:00", "duration": "2h", "timezone": "Asia/Shanghai", "prepare": "1h"}

# A catalog of one check that shows the window the preflight role's filter computed.
SHOW_WINDOW = yaml.safe_dump({"checks": [{
    "id": "w", "title": "t", "severity": "warn", "failure_mode": "F3", "facts": [], "when": "event", "rule": "true",
    "observed": "{{ event.protected_start.isoformat() }}|{{ event.start.isoformat() }}|{{ event.end.isoformat() }}",
    "expected": "-", "remediation": "-"}]})


# --- event windows ----------------------------------------------------------------------------

def _utc(moment: datetime) -> str:
    """A moment in one spelling: paths may show it in the window's zone or in the offset given."""
    return moment.astimezone(timezone.utc).isoformat()


def _by_profile(window: dict) -> tuple[str, str]:
    parsed = parse_profile(dict(EVENT, window=window)).window
    return _utc(parsed.protected_start), _utc(parsed.end)


def _by_check(window: dict) -> tuple[str, str]:
    # `opsctl check` without --event: the host's own profile window.
    event = event_window(parse_profile(dict(EVENT, window=window)), EventOverride())
    return _utc(event["protected_start"]), _utc(event["end"])


def _by_preflight_role(window: dict) -> tuple[str, str]:
    results = check_engine._filter_evaluate({}, SHOW_WINDOW, dict(EVENT, window=window), "web1")
    protected, _start, end = results[0]["observed"].split("|")
    return _utc(datetime.fromisoformat(protected)), _utc(datetime.fromisoformat(end))


def _by_logrotate_role(window: dict) -> tuple[str, str]:
    span = logslots.event_span(dict(EVENT, window=window))
    return _utc(span.start), _utc(span.end)


PATHS = {"profile": _by_profile, "check": _by_check, "preflight role": _by_preflight_role,
         "logrotate role": _by_logrotate_role}


def _outcomes(window: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, path in PATHS.items():
        try:
            out[name] = path(window)
        except Exception as exc:  # noqa: BLE001 - what each path does is what is compared
            out[name] = ("refused", type(exc).__name__, str(exc))
    return out


def test_a_window_of_2_h_with_a_space_is_two_hours_on_every_path():
    outcomes = _outcomes(dict(WINDOW, duration="2 h"))
    assert set(outcomes.values()) == {("2026-11-10T15:00:00+00:00", "2026-11-10T18:00:00+00:00")}, outcomes


@pytest.mark.parametrize("window", [
    dict(WINDOW, duration="1h30m", prepare="90s"),
    dict(WINDOW, duration=7200),
    dict(WINDOW, start="2026-11-11T00:00+00:00"),               # an explicit offset beats the zone
    {k: v for k, v in WINDOW.items() if k != "prepare"},         # the default margin: 1h
    dict(WINDOW, start=datetime(2026, 11, 11, 5, 0)),           # YAML's own timestamp
], ids=["1h30m", "seconds", "offset", "default-prepare", "datetime"])
def test_a_good_window_is_the_same_span_on_every_path(window):
    outcomes = _outcomes(window)
    assert len(set(outcomes.values())) == 1 and "refused" not in next(iter(outcomes.values())), outcomes


@pytest.mark.parametrize("window", [
    dict(WINDOW, timezone="Mars/Olympus"),
    dict(WINDOW, timezone="Mars/Olympus", start="2026-11-11T00:00+08:00"),  # the zone is still read
    dict(WINDOW, timezone="America"),                                      # a directory of the tz database
    dict(WINDOW, duration="0s"),
    dict(WINDOW, duration="2 hours"),
    dict(WINDOW, start="11/11/2026"),
    dict(WINDOW, start="9999-12-31T23:00"),
    {k: v for k, v in WINDOW.items() if k != "timezone"},
    {k: v for k, v in WINDOW.items() if k != "duration"},
    dict(WINDOW, durtion="3h"),
], ids=["unknown-zone", "unknown-zone-with-offset", "zone-directory", "zero", "words", "us-date", "calendar-end",
        "no-timezone", "no-duration", "typo-key"])
def test_a_bad_window_is_refused_on_every_path_with_one_clear_line(window):
    outcomes = _outcomes(window)
    assert all(o[0] == "refused" for o in outcomes.values()), outcomes
    for name, (_refused, kind, message) in outcomes.items():
        assert kind in ("ProfileError", "WindowError"), (name, kind, message)
        assert "\n" not in message and "opsctl_event.window" in message, (name, message)
    # one rule, one message (the CLI's ProfileError may name the file first; here it does not)
    assert len({o[2] for o in outcomes.values()}) == 1, outcomes


# --- durations --------------------------------------------------------------------------------

def _timer_span(accuracy: str, delay: str) -> int:
    units = {"logrotate_timer": {"OnCalendar": "daily", "AccuracySec": accuracy, "RandomizedDelaySec": delay}}
    return probe_facts.rotation_runs({"entries": [], "scripts": []}, units, True)[0]["span_minutes"]


@pytest.mark.parametrize("accuracy, delay, minutes", [
    ("1m", "0", 1),
    ("1h", "0", 60),
    ("1min", "2 h", 121),          # systemd.time: "2 h" is two hours, not "unreadable, so 0"
    ("30 min", "0", 30),           # was read as the 60 s default
    ("1h 30min", "5sec", 90),
    ("12h", "1d", 2160),
])
def test_the_probe_reads_systemd_timer_delays_as_systemd_does(accuracy, delay, minutes):
    assert _timer_span(accuracy, delay) == minutes


def test_host_times_go_by_the_one_rule_of_durations():
    # The probe keeps a host's value (a huge timeout is a finding, not "no timeout") ...
    assert hosttext.nginx_seconds("3651d") == 3651 * 86400
    # ... and reads nginx and php-fpm syntax exactly as the nginx role's filter does.
    for text in ("60", "60s", "1m30s", "500ms", "2w", "1M", "1y"):
        assert hosttext.nginx_seconds(text) == durations.nginx_seconds(text), text
    assert [hosttext.fpm_seconds(t) for t in ("30", "30s", "1m", "2h", "1d", "1m30s", "")] == \
        [30, 30, 60, 7200, 86400, None, None]


def _dict_literals_of_units(path: Path) -> list[str]:
    """Every dict literal in a module that maps unit names such as "h" or "ms" to seconds."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if {"h", "m"} <= keys or {"ms", "s"} <= keys:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_one_table_of_time_units():
    sources = [*sorted((ROOT / "opsctl").rglob("*.py")), *sorted((COLLECTION / "plugins").rglob("*.py"))]
    tables = [hit for path in sources for hit in _dict_literals_of_units(path)]
    assert len(tables) == 1 and tables[0].startswith("ansible_collections/opsctl/fleet/plugins/plugin_utils/durations.py"), tables


# --- cron lines -------------------------------------------------------------------------------

RELOAD = {"php-fpm": "/etc/init.d/php8.2-fpm reload", "nginx": "/etc/init.d/nginx reload"}
# check's two cron checks, straight from the shipped catalog
CRON_CHECKS = [c for c in load_checks()[0].checks if c.id in ("cron-restart", "cron-restart-in-window")]


def _lifecycle_verdict(command: str) -> str:
    finding = lifecycle_cron.scan_line("/etc/cron.d/x", 1, f"0 4 * * * root {command}", RELOAD, "report")
    if finding is None:
        return "fine"
    return {"reported": "hard", "kept": "stop"}[finding.action]


def _check_verdict(command: str) -> str:
    cron = probe_facts.parse_crontabs(f"### file /etc/cron.d/x system\n0 4 * * * root {command}\n")
    engine = check_engine.Engine(CRON_CHECKS)
    results = [r for r in engine.evaluate("web1", {"facts": {"cron": cron}, "event": None, "profile": None})]
    flagged = [r for r in results if r.status != "pass"]
    if not flagged:
        return "fine"
    entry = cron["entries"][0]
    return "stop" if entry["action"] == "stop" else "hard"


@pytest.mark.parametrize("command, verdict", [
    ("kill -QUIT $(cat /run/nginx.pid)", "stop"),           # graceful stop: no request cut, but the node is down
    ("kill -s QUIT `cat /run/php/php8.2-fpm.pid`", "stop"),
    ("/etc/init.d/nginx stop", "stop"),
    ("systemctl stop php8.2-fpm", "stop"),
    ("systemctl restart php8.2-fpm", "hard"),
    ("service php-fpm restart", "hard"),
    ("/etc/init.d/nginx restart", "hard"),
    ("invoke-rc.d php8.2-fpm restart", "hard"),
    ("pkill php-fpm", "hard"),
    ("killall -9 php-fpm", "hard"),
    ("kill $(cat /run/nginx.pid)", "hard"),
    ("kill -TERM $(pidof php-fpm8.2)", "hard"),
    ("/etc/init.d/php8.2-fpm stop; sleep 5; /etc/init.d/php8.2-fpm start", "hard"),
    ("kill -QUIT $(cat /run/nginx.pid); sleep 5; /etc/init.d/nginx start", "hard"),
    ("kill -USR2 $(cat /run/php/php8.2-fpm.pid)", "fine"),
    ("kill -USR1 $(cat /run/nginx.pid)", "fine"),
    ("kill -HUP $(cat /run/nginx.pid)", "fine"),
    ("pkill -USR2 php-fpm8.2", "fine"),
    ("systemctl reload nginx", "fine"),
    ("systemctl reload php8.2-fpm.service", "fine"),
    ("service nginx force-reload", "fine"),                 # Debian's scripts and systemd: a reload
    ("/etc/init.d/nginx rotate", "fine"),
    ("/etc/init.d/php-fpm-exporter restart", "fine"),       # not php-fpm
    ("/usr/local/bin/backup --restart-db >> /var/log/nginx/backup.log", "fine"),
    ("systemctl restart mysql", "fine"),
    # found, never rewritten: the lifecycle role reports and keeps them, check flags them
    ("systemctl restart mysql nginx", "hard"),
    ("supervisorctl restart php-fpm", "hard"),
    ("supervisorctl restart app:php-fpm", "hard"),
    ("rc-service nginx restart", "hard"),
    ("/usr/local/bin/restart-nginx.sh", "hard"),
    ("systemctl stop mysql php8.2-fpm", "stop"),
    ("supervisorctl status php-fpm", "fine"),
])
def test_the_lifecycle_role_and_check_give_a_cron_line_the_same_verdict(command, verdict):
    assert (_lifecycle_verdict(command), _check_verdict(command)) == (verdict, verdict)


@pytest.mark.parametrize("policy", ["reload", "comment"])
def test_a_form_that_cannot_be_rewritten_is_reported_and_left_as_it_is(policy):
    line = "0 4 * * * root systemctl restart mysql nginx"
    result = lifecycle_cron.rewrite("/etc/cron.d/x", line + "\n", RELOAD, policy)
    assert result.content == line + "\n" and [f.action for f in result.findings] == ["reported"]
    assert "does not rewrite" in result.findings[0].why


@pytest.mark.parametrize("line, flagged", [
    ("/etc/init.d/php8.2-fpm restart", True),
    ("kill -QUIT $(cat /run/nginx.pid)", True),          # a stop, however graceful, is no reopen
    ("systemctl reload nginx", False),
    ("invoke-rc.d nginx rotate >/dev/null", False),
    ("kill -USR1 `cat /run/nginx.pid`", False),
])
def test_postrotate_lines_are_judged_by_the_same_classifier(line, flagged):
    text = f"### file /etc/logrotate.d/x\n/var/log/x.log {{\n  postrotate\n    {line}\n  endscript\n}}\n"
    found = probe_facts.parse_logrotate(text)
    assert bool(found) is flagged, found


# --- the event profile: one schema for the CLI and the capacity model -----------------------------

@pytest.mark.parametrize("change", [
    {"colour": "red"},                                          # an unknown key
    {"request_time": {"typical_ms": 50, "p99_ms": 300, "p50_ms": 1}},
    {"client_timeout_s": 0.3},                                   # not above p99
    {"peak_qps": 10 ** 400},
    {"window": {"start": "2026-11-11T00:00", "duration": "0s", "timezone": "UTC"}},
])
def test_the_cli_and_the_capacity_model_refuse_the_same_profile_with_the_same_line(change):
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import CapacityError, derive
    from opsctl.profile import ProfileError

    event = {**EVENT, **change}
    with pytest.raises(ProfileError) as cli:
        parse_profile(event)
    with pytest.raises(CapacityError) as model:
        derive(event, {"cpus": 2, "memory_mb": 4096, "host": "web1"})
    assert str(cli.value) == str(model.value)


# --- grep finds one parser per concept ----------------------------------------------------------

@pytest.mark.parametrize("pattern, home", [
    (r"fromisoformat\(", "events.py"),
    (r"ZoneInfo\(", "events.py"),
    (r"restart\|stop", "service_actions.py"),
    (r"def parse_cron\b", "check_engine.py"),      # cron schedules; the probe's cron files are parse_crontabs
    (r'lstrip\("\+-"\)|def utc_offset', "events.py"),   # a host's +0800
    (r"is below typical_ms", "event_profile.py"),       # the event profile's schema
    (r"unknown key \{", "configvalues.py"),
    (r"longer than zero", "durations.py"),
    (r'\}ms"', "durations.py"),                          # a timeout written as nginx reads it: 800ms
    (r"def shortest_client_ms|is too short for p99", "upstream_timeouts.py"),
])
def test_grep_finds_one_home_per_concept(pattern, home):
    # opsctl/lab only builds the lab's own inventory (a fixed zone); it reads nobody's input.
    sources = [p for p in sorted((ROOT / "opsctl").rglob("*.py")) if "lab" not in p.parts]
    sources += sorted((COLLECTION / "plugins").rglob("*.py"))
    hits = {p.name for p in sources if re.search(pattern, p.read_text(encoding="utf-8"))}
    assert hits == {home}, hits


def test_one_signal_and_wait_rule_in_the_collection():
    # Waiting for a master's new workers means listing its children: only signal-wait.sh does it.
    scripts = [p for p in sorted(COLLECTION.rglob("*")) if p.suffix in (".sh", ".yml", ".j2")
               and "tests" not in p.relative_to(COLLECTION).parts]
    hits = {p.name for p in scripts if "pgrep -P" in p.read_text(encoding="utf-8")}
    assert hits == {"signal-wait.sh"}, hits

