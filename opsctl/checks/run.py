"""`opsctl check`: probe every host over SSH in one round trip, then evaluate the catalog."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Callable, Mapping

from ansible_collections.opsctl.fleet.plugins.plugin_utils import capacity, events
from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import CatalogError, Engine, Result, Unavailable, load_catalog
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip, parse_duration, parse_positive_duration
from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import capacity_facts, parse

from opsctl.checks.grouping import Group, compress_hosts, group_report
from opsctl.errors import OpsctlError
from opsctl.inventory import Host, Inventory
from opsctl.paths import roles_dir
from opsctl.probe import probe_script
from opsctl.profile import DEFAULT_PREPARE, EventProfile
from opsctl.safetext import visible
from opsctl.sshexec import ExecResult, Timeouts, run_many, targets_for

SCHEMA_VERSION = 2      # 2: groups, the findings grouped across hosts (README.md, opsctl check)
SEVERITY_RANK = {"pass": 0, "warn": 1, "fail": 2}
DEFAULT_DURATION = timedelta(hours=2)   # --event without --duration, and no profile window


@dataclass(frozen=True)
class EventOverride:
    """--event / --duration from the command line; None fields fall back to each host's profile."""
    start: str | None = None
    duration: str | None = None


@dataclass
class HostOutcome:
    name: str
    address: str
    status: str            # ok | error
    error: str = ""
    elapsed_s: float = 0.0
    window: str = ""


@dataclass
class Report:
    hosts: list[HostOutcome]
    results: list[Result]
    fail_on: str = "fail"
    wall_s: float = 0.0

    def findings(self) -> list[Result]:
        """Results at or above --fail-on; a check that could not be evaluated counts at its severity."""
        floor = SEVERITY_RANK[self.fail_on]
        return [r for r in self.results if r.status != "pass" and SEVERITY_RANK[r.severity] >= floor]

    @property
    def ready(self) -> bool:
        return not self.findings() and all(h.status == "ok" for h in self.hosts)

    @property
    def verdict(self) -> str:
        return "ready" if self.ready else "not ready"




def load_checks(extra: tuple[str, ...] = ()) -> tuple[Engine, list[str]]:
    """The shipped catalog plus users' own (a user check with a shipped id replaces it), compiled."""
    shipped = roles_dir() / "opsctl_preflight/files/catalog.yml"
    texts = [(str(shipped), shipped.read_text(encoding="utf-8"))]
    for name in extra:
        path = Path(name).expanduser()
        if not path.is_file():
            raise OpsctlError(f"--catalog {name}: no such file")
        try:
            texts.append((str(path), path.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            raise OpsctlError(f"--catalog {name}: not a text file (not UTF-8): expected a YAML check catalog") from None
        except OSError as exc:
            raise OpsctlError(f"--catalog {name}: cannot read it: {exc.strerror or exc}") from None
    engine = Engine([])
    try:
        engine.checks = load_catalog(texts, engine)
        return engine, [source for source, _ in texts]
    except CatalogError as exc:
        raise OpsctlError(str(exc)) from None


def _override_start(text: str, tz: tzinfo) -> datetime:
    return events.parse_start(text, tz, f"--event {clip(text)}")


def validate_override(override: EventOverride) -> None:
    """Bad --event / --duration is a usage error before anything connects."""
    try:
        start = _override_start(override.start, timezone.utc) if override.start else None
    except events.WindowError:
        raise OpsctlError(f"--event {clip(override.start)}: expected a date and time like "
                          "2026-11-11T00:00+08:00") from None
    duration = DEFAULT_DURATION
    if override.duration:
        try:
            duration = parse_positive_duration(override.duration)
        except ValueError as exc:
            raise OpsctlError(f"--duration {clip(override.duration)}: {exc}") from None
    # With the default margin: a profile's own margin is checked per host (event_window).
    try:
        if start:
            events.check_bounds(start, duration, DEFAULT_PREPARE, f"--event {clip(override.start)}")
    except events.WindowError as exc:
        raise OpsctlError(str(exc)) from None


def event_window(profile: EventProfile | None, override: EventOverride) -> dict[str, Any] | None:
    """The window a host is checked against: --event/--duration first, then its profile's.

    Times are shown in the profile window's zone; with no profile window, in the offset given.
    Raises ValueError when --event and this profile's duration or margin reach past the calendar.
    """
    window = profile.window if profile else None
    if override.start is None and window is None:
        return None
    zone: tzinfo = events.zone(window.timezone, "opsctl_event.window.timezone") if window else timezone.utc
    start = _override_start(override.start, zone) if override.start else window.start  # type: ignore[union-attr]
    if window is None:
        zone = start.tzinfo or timezone.utc   # shown in the offset --event gave
    duration = (parse_duration(override.duration) if override.duration
                else window.duration if window else DEFAULT_DURATION)
    prepare = window.prepare if window else DEFAULT_PREPARE
    events.check_bounds(start, duration, prepare)
    label = window.timezone if window else start.astimezone(zone).strftime("UTC%z")
    checked = events.EventWindow(start=start, duration=duration, prepare=prepare, timezone=label)
    return events.context(checked, profile.name if profile else "", shown_in=zone)


def capacity_model(host: Host, facts: Mapping[str, Any]) -> Mapping[str, Any]:
    """The capacity model's expected values for this host, or a stand-in that errors when read."""
    raw_event = host.vars.get("opsctl_event")
    if not raw_event:
        return Unavailable("capacity model unavailable: no opsctl_event for this host")
    try:
        return capacity.derive(raw_event, capacity_facts(dict(facts), host.name),
                               host.vars.get("opsctl_capacity_overrides") or None,
                               host.flag("opsctl_capacity_force"))
    except Exception as exc:  # a model that refuses this host is reported by the checks that read it
        return Unavailable(f"capacity model unavailable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def host_context(host: Host, facts: Mapping[str, Any], override: EventOverride) -> dict[str, Any]:
    return {"facts": facts, "profile": host.profile.as_dict() if host.profile else None,
            "event": event_window(host.profile, override), "expected": capacity_model(host, facts),
            "host": host.name}


def _evaluate_host(host: Host, answer: ExecResult, engine: Engine, override: EventOverride,
                   outcome: HostOutcome) -> list[Result]:
    try:
        facts = parse(answer.stdout)
    except (ValueError, RecursionError) as exc:   # not JSON, or nested deeper than json can parse
        outcome.status, outcome.error = "error", f"probe output is not usable: {str(exc)[:200]}"
        return []
    try:
        event_window(host.profile, override)
    except ValueError as exc:   # --event with this host's own margin or duration: this host's problem
        outcome.status, outcome.error = "error", f"event window: {exc}"
        return []
    try:
        context = host_context(host, facts, override)
        if context["event"]:
            event = context["event"]
            outcome.window = f"{event['start']:%Y-%m-%d %H:%M} {event['timezone']} +{format_span(event)}"
        return engine.evaluate(host.name, context)
    except Exception as exc:  # noqa: BLE001 - one host's odd facts must never abort the fleet's report
        outcome.status = "error"
        outcome.error = f"could not evaluate this host's facts: {type(exc).__name__}: {str(exc)[:200]}"
        return []


def format_span(event: Mapping[str, Any]) -> str:
    minutes = int((event["end"] - event["start"]).total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes % 60 else f"{minutes // 60}h"


def run_check(inv: Inventory, engine: Engine, override: EventOverride, *, fail_on: str = "fail",
              timeouts: Timeouts = Timeouts(), workers: int = 64,
              on_host: Callable[[HostOutcome], None] | None = None) -> Report:
    started = datetime.now()
    targets = targets_for(inv.hosts, inv.ssh)
    by_name = {h.name: h for h in inv.hosts}
    outcomes: dict[str, HostOutcome] = {}
    results: dict[str, list[Result]] = {}

    def done(answer: ExecResult) -> None:
        host = by_name[answer.host]
        outcome = HostOutcome(host.name, host.address, "ok" if answer.ok else "error", answer.error,
                              round(answer.elapsed, 2))
        if answer.ok:
            results[host.name] = _evaluate_host(host, answer, engine, override, outcome)
        outcomes[host.name] = outcome
        if on_host:
            on_host(outcome)

    run_many(targets, probe_script(), "sh -s", timeouts=timeouts, workers=workers, on_result=done)
    ordered = [h.name for h in inv.hosts]
    return Report(hosts=[outcomes[n] for n in ordered], results=[r for n in ordered for r in results.get(n, [])],
                  fail_on=fail_on, wall_s=round((datetime.now() - started).total_seconds(), 2))


def _shown(fields: dict[str, Any]) -> dict[str, Any]:
    """Every text field as safetext shows it: a host's lone surrogate would make the JSON no valid
    UTF-8 for its reader, a bidi override or escape sequence would reach whoever prints it."""
    return {key: visible(value) if isinstance(value, str) else value for key, value in fields.items()}


def _group_json(group: Group) -> dict[str, Any]:
    hosts = group.hosts
    return dict(_shown({"kind": group.kind, "status": group.status, "check": group.check, "item": group.item,
                        "title": group.title, "severity": group.severity, "failure_mode": group.failure_mode,
                        "host_count": len(hosts), "hosts_compact": compress_hosts(hosts),
                        "observed": group.observed, "expected": group.expected,
                        "remediation": group.remediation}),
                hosts=[visible(h) for h in hosts],
                values=[{"observed": visible(v.observed), "hosts": [visible(h) for h in v.hosts]} for v in group.values])


def report_json(report: Report) -> dict[str, Any]:
    """The stable --format json schema (version 2: version 1 and groups)."""
    return {
        "version": SCHEMA_VERSION,
        "verdict": report.verdict,
        "fail_on": report.fail_on,
        "wall_s": report.wall_s,
        "hosts": [_shown({"host": h.name, "address": h.address, "status": h.status, "error": h.error,
                          "elapsed_s": h.elapsed_s, "window": h.window}) for h in report.hosts],
        "results": [_shown({"host": r.host, "check": r.check, "item": r.item, "title": r.title,
                            "severity": r.severity, "status": r.status, "observed": r.observed,
                            "expected": r.expected, "remediation": r.remediation,
                            "failure_mode": r.failure_mode}) for r in report.results],
        "groups": [_group_json(g) for g in group_report(report, passes=True)],
    }


def dumps(report: Report) -> str:
    return json.dumps(report_json(report), indent=2)
