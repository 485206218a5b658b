"""Evaluate a declarative check catalog over one host's facts.

A check is data (see catalog.yml): `rule` is a Jinja2 expression that is true when the host is
fine; `when` limits where it applies; `each` makes one result per item (bound to `item`);
`let` names intermediate figures; `observed`, `expected` and `remediation` are Jinja2
templates. Expressions run in Jinja2's ImmutableSandboxedEnvironment over `facts`, `profile`,
`event`, `expected` (the capacity model) and the helpers registered below, so a catalog
cannot reach Python internals nor change the facts. Adding a check needs no code here.

Needs only the stdlib, Jinja2 and PyYAML (both always present where Ansible runs) and no
opsctl imports: the opsctl_preflight role's filters call this same module. Durations follow
durations.py, event windows and time zones events.py, as in the CLI.
"""

# F1-F7 and seed NNN: docs/failure-modes.md and docs/incidents.md of the opsctl repository.

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping

import yaml
from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ansible_collections.opsctl.fleet.plugins.plugin_utils import durations, events
from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import unknown_key_problem

SEVERITIES = ("warn", "fail")
REQUIRED = ("id", "title", "severity", "failure_mode", "facts", "rule", "observed", "expected", "remediation")
OPTIONAL = ("when", "each", "label", "let", "doc")
MAX_SCAN_MINUTES = 7 * 24 * 60  # cron scans never look further than a week


class CatalogError(ValueError):
    """A catalog that cannot be used; the message is one line naming the file and check."""


class ModelUnavailable(LookupError):
    """Raised when a check reads the capacity model but it could not be computed."""


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    severity: str
    failure_mode: str
    facts: tuple[str, ...]
    rule: str
    observed: str
    expected: str
    remediation: str
    when: str = ""
    each: str = ""
    label: str = ""
    let: tuple[tuple[str, str], ...] = ()
    source: str = ""


@dataclass
class Result:
    host: str
    check: str
    title: str
    severity: str
    status: str
    observed: str
    expected: str
    remediation: str
    failure_mode: str
    item: str = ""
    facts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Unavailable(Mapping):
    """Stands in for the capacity model when it could not be computed: any read is an error."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __getitem__(self, key: str) -> Any:
        raise ModelUnavailable(self.reason)

    def __iter__(self):
        return iter(())

    def __len__(self) -> int:
        return 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise ModelUnavailable(self.reason)


# --- time: cron schedules against the event window ---------------------------------------------

_NAMES = {"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9,
          "oct": 10, "nov": 11, "dec": 12, "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _cron_number(text: str, low: int, high: int) -> int:
    """One cron value (a number or a month/day name) inside its field's limits, as cron demands."""
    value = _NAMES.get(text)
    if value is None:
        if not (text.isascii() and text.isdigit()) or len(text) > 2:
            raise ValueError(f"{text!r} is not a cron value")
        value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}-{high}")
    return value


def _field(text: str, low: int, high: int) -> set[int]:
    """One cron field as the set of values it matches; raises ValueError for what cron refuses.

    Every number is checked against the field's limits before a range is built: a host's crontab
    must not be able to make the controller build a set of millions of values."""
    values: set[int] = set()
    parts = text.lower().split(",")
    if len(parts) > high - low + 1:   # more entries than the field has values: not a real schedule
        raise ValueError(f"{len(parts)} entries in a field of {high - low + 1} values")
    for part in parts:
        body, slash, step_text = part.partition("/")
        step = _cron_number(step_text, 1, high + 1) if slash else 1
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = _cron_number(a, low, high), _cron_number(b, low, high)
        else:
            start = _cron_number(body, low, high)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return values


def parse_cron(schedule: str) -> tuple[set[int], ...] | None:
    """Five cron fields as sets; None for @reboot or something that is not a schedule."""
    schedule = _MACROS.get(schedule.strip(), schedule.strip())
    parts = schedule.split()
    if len(parts) != 5:
        return None
    try:
        fields = tuple(_field(p, lo, hi) for p, (lo, hi) in zip(parts, _RANGES))
    except ValueError:
        return None
    if 7 in fields[4]:
        fields[4].add(0)
    return fields + (parts[2] != "*", parts[4] != "*")  # type: ignore[return-value]


def _fires(spec: tuple, moment: datetime) -> bool:
    minutes, hours, doms, months, dows, dom_set, dow_set = spec
    if moment.minute not in minutes or moment.hour not in hours or moment.month not in months:
        return False
    dom_ok, dow_ok = moment.day in doms, (moment.isoweekday() % 7) in dows
    # cron's rule: when both day fields are restricted, either one matching is enough.
    return (dom_ok or dow_ok) if dom_set and dow_set else (dom_ok and dow_ok)


def first_firing(schedule: str, span_minutes: int, start: datetime, end: datetime, zone: Any) -> datetime | None:
    """First run of `schedule` (host-local cron time) whose [run, run + span] touches [start, end)."""
    spec = parse_cron(schedule)
    if spec is None:
        return None
    if not 0 <= span_minutes <= MAX_SCAN_MINUTES:
        raise ValueError(f"span_minutes {durations.clip(span_minutes)}: expected 0 to {MAX_SCAN_MINUTES} (a week)")
    moment = (start - timedelta(minutes=span_minutes)).astimezone(zone).replace(second=0, microsecond=0)
    # end - start, not start + a week: the sum overflows near the end of the calendar.
    stop = end if end - start <= timedelta(minutes=MAX_SCAN_MINUTES) else start + timedelta(minutes=MAX_SCAN_MINUTES)
    while moment < stop:
        if _fires(spec, moment) and moment + timedelta(minutes=span_minutes) >= start:
            return moment
        moment = (moment.astimezone(timezone.utc) + timedelta(minutes=1)).astimezone(zone)
    return None


# --- the sandbox ----------------------------------------------------------------------------------

def _helpers(context: Mapping[str, Any]) -> dict[str, Callable[..., Any]]:
    """Functions a catalog may call; each is small, pure and safe to expose."""
    host_facts = context.get("facts", {}).get("host", {})
    event = context.get("event")

    def fires_in_event(schedule: str, span_minutes: int = 0) -> str:
        """'' when the schedule stays clear of the protected window, else when it fires."""
        if not event or not schedule:
            return ""
        zone = events.host_zone(host_facts)
        hit = first_firing(schedule, int(span_minutes), event["protected_start"], event["end"], zone)
        if hit is None:
            return ""
        in_event = hit.astimezone(event["start"].tzinfo)
        span = f" (runs for up to {span_minutes} min)" if span_minutes else ""
        return (f"{hit:%Y-%m-%d %H:%M} host time = {in_event:%H:%M} {event['timezone']}{span}, inside "
                f"{event['protected_start'].astimezone(event['start'].tzinfo):%H:%M}-{event['end'].astimezone(event['start'].tzinfo):%H:%M}")

    def size(n: Any) -> str:
        value = float(n or 0)
        for unit in ("B", "KB", "MB", "GB", "TB"):
            if value < 1024 or unit == "TB":
                return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
            value /= 1024
        return f"{value} B"

    def secs(value: Any) -> str:
        if value is None:
            return "unset"
        value = float(value)
        return "0 (unlimited)" if value == 0 else f"{value:g}s"

    def pct(value: Any) -> str:
        return f"{100 * float(value or 0):.1f}%"

    return {"ceil": lambda x: int(math.ceil(float(x))), "floor": lambda x: int(math.floor(float(x))),
            "min": min, "max": max, "round": round, "int": int, "float": float, "len": len,
            "fires_in_event": fires_in_event, "size": size, "secs": secs, "pct": pct,
            "matches": lambda pattern, text: bool(re.search(pattern, str(text or "")))}


def _environment() -> ImmutableSandboxedEnvironment:
    """The sandbox the catalog runs in.

    Immutable: a rule cannot change the facts it judges (nor what the next check sees), and
    unsafe attributes (`__class__`, ...) are refused. Compiled code is never cached on disk:
    Jinja's bytecode cache unmarshals whatever file it finds, which runs code outside the
    sandbox; compiling the whole catalog costs about 0.1 s of CPU.
    """
    return ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False,
                                         keep_trailing_newline=False, cache_size=-1)


def _check_from(entry: Any, source: str, engine: "Engine") -> Check:
    name = str(entry.get("id", "?")) if isinstance(entry, dict) else "?"
    where = f"{source}: check {name if len(name) <= durations.ECHO_CHARS else name[:durations.ECHO_CHARS] + '…'}"
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}: expected a mapping, got {type(entry).__name__}")
    missing = [k for k in REQUIRED if k not in entry]
    if missing:
        raise CatalogError(f"{where}: missing key {missing[0]!r}")
    unknown = unknown_key_problem(entry, (*REQUIRED, *OPTIONAL), where)
    if unknown:
        raise CatalogError(unknown)
    # An empty `rule:` is YAML null, which str() made the rule "None" (a name, undefined at run
    # time): a check with nothing to judge, or to name, or to show, is a broken catalog.
    empty = next((k for k in ("id", "title", "rule", "observed") if entry[k] is None or not str(entry[k]).strip()),
                 None)
    if empty:
        raise CatalogError(f"{where}: {empty} is empty")
    if entry["severity"] not in SEVERITIES:
        raise CatalogError(f"{where}: severity must be warn or fail, got {entry['severity']!r}")
    if not re.fullmatch(r"F[1-9]", str(entry["failure_mode"])):
        raise CatalogError(f"{where}: failure_mode must be F1..F9, got {entry['failure_mode']!r}")
    let = entry.get("let") or {}
    if not isinstance(let, dict):
        raise CatalogError(f"{where}: let must be a mapping of name: expression")
    odd = next((k for k in let if not isinstance(k, str) or not k.isidentifier()), None)
    if odd is not None:
        raise CatalogError(f"{where}: let name {durations.clip(odd)} is not a name (letters, digits and _)")
    facts = entry["facts"] or []
    if not isinstance(facts, list) or not all(isinstance(f, str) for f in facts):
        raise CatalogError(f"{where}: facts must be a list of fact names, got {facts!r}"[:300])
    for key in ("id", "title", "rule", "observed", "expected", "remediation", "when", "each", "label"):
        if not isinstance(entry.get(key, ""), (str, int, float, bool, type(None))):
            raise CatalogError(f"{where}: {key} must be text or a plain value, got {type(entry[key]).__name__}")
    check = Check(id=str(entry["id"]), title=str(entry["title"]), severity=entry["severity"],
                  failure_mode=str(entry["failure_mode"]), facts=tuple(facts),
                  rule=str(entry["rule"]), observed=str(entry["observed"]), expected=str(entry["expected"]),
                  remediation=str(entry["remediation"]).strip(), when=str(entry.get("when") or ""),
                  each=str(entry.get("each") or ""), label=str(entry.get("label") or ""),
                  let=tuple((str(k), str(v)) for k, v in let.items()), source=source)
    try:
        engine.compile(check)
    except TemplateError as exc:
        raise CatalogError(f"{where}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    except RecursionError:   # Jinja's parser and compiler recurse once per nested bracket
        raise CatalogError(f"{where}: an expression or template is nested too deeply to compile") from None
    return check


def load_catalog(texts: Iterable[tuple[str, str]], engine: "Engine | None" = None) -> list[Check]:
    """(source name, YAML text) pairs -> checks; a later catalog's check replaces one with its id.

    Every expression and template is compiled here, so a broken catalog fails before any host
    is contacted; pass the Engine that will evaluate them to compile only once.
    """
    engine = engine or Engine([])
    checks: dict[str, Check] = {}
    for source, text in texts:
        for check in _checks_in(source, text, engine):
            checks[check.id] = check
    return list(checks.values())


def _checks_in(source: str, text: str, engine: "Engine") -> list[Check]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except RecursionError:   # PyYAML's composer recurses once per nesting level ([[[[...]]]])
        raise CatalogError(f"{source}: not a check catalog: YAML nested too deeply") from None
    entries = data.get("checks") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise CatalogError(f"{source}: expected a list of checks (or a mapping with 'checks:')")
    try:
        return [_check_from(entry, source, engine) for entry in entries]
    except RecursionError:   # a value nested too deeply to show or convert (facts: [[[[...]]]])
        raise CatalogError(f"{source}: a check holds a value nested too deeply") from None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, ModelUnavailable):
        return str(exc)
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]


class Engine:
    """A catalog compiled once, evaluated for many hosts (compiling dominates otherwise)."""

    def __init__(self, checks: Iterable[Check]) -> None:
        self.checks = list(checks)
        self.env = _environment()
        self._expressions: dict[str, Any] = {}
        self._templates: dict[str, Any] = {}

    def expression(self, text: str) -> Any:
        if text not in self._expressions:
            self._expressions[text] = self.env.compile_expression(text, undefined_to_none=False)
        return self._expressions[text]

    def template(self, text: str) -> Any:
        if text not in self._templates:
            self._templates[text] = self.env.from_string(text)
        return self._templates[text]

    def compile(self, check: Check) -> None:
        """Compile every expression and template of a check (raises TemplateError)."""
        for text in (check.rule, check.when, check.each, *(e for _name, e in check.let)):
            if text:
                self.expression(text)
        for text in (check.observed, check.expected, check.remediation, check.label):
            self.template(text or "")

    def render(self, text: str, scope: Mapping[str, Any]) -> str:
        return self.template(text).render(**scope).strip()

    def _item(self, check: Check, scope: dict[str, Any], host: str, label: str) -> Result:
        base = dict(host=host, check=check.id, title=check.title, severity=check.severity,
                    failure_mode=check.failure_mode, item=label, facts=list(check.facts))
        try:
            for name, expression in check.let:
                scope[name] = self.expression(expression)(**scope)
            ok = bool(self.expression(check.rule)(**scope))
            return Result(status="pass" if ok else check.severity, observed=self.render(check.observed, scope),
                          expected=self.render(check.expected, scope),
                          remediation=self.render(check.remediation, scope), **base)
        except Exception as exc:  # a check that cannot be evaluated is an error result, never a crash
            return Result(status="error", observed=_one_line(exc), expected="", remediation=_error_hint(exc), **base)

    def evaluate(self, host: str, context: Mapping[str, Any]) -> list[Result]:
        """Every applicable check (and item) on one host."""
        base_scope = dict(context)
        base_scope.update(_helpers(context))
        results: list[Result] = []
        for check in self.checks:
            scope = dict(base_scope)
            try:
                if check.when and not self.expression(check.when)(**scope):
                    continue
                items = list(self.expression(check.each)(**scope)) if check.each else [None]
            except Exception as exc:
                results.append(Result(host=host, check=check.id, title=check.title, severity=check.severity,
                                      status="error", observed=_one_line(exc), expected="",
                                      remediation=_error_hint(exc), failure_mode=check.failure_mode,
                                      facts=list(check.facts)))
                continue
            for item in items:
                item_scope = dict(scope, item=item)
                label = ""
                if check.label:
                    try:
                        label = self.render(check.label, item_scope)
                    except Exception as exc:
                        label = f"? ({_one_line(exc)})"
                results.append(self._item(check, item_scope, host, label))
        return results


def _error_hint(exc: BaseException) -> str:
    if isinstance(exc, ModelUnavailable):
        return "make the capacity model computable for this host (opsctl harden --explain shows why not)"
    return "fix the facts this check reads, or the check itself"


def _filter_evaluate(facts: Mapping[str, Any], catalog_text: str, profile: Mapping[str, Any] | None,
                     host: str, expected: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Ansible filter: evaluate a catalog (YAML text) for one host; the event is the profile's window."""
    raw = dict(profile or {})
    if raw:
        raw.setdefault("name", "")
        raw.setdefault("concurrency", None)
        raw.setdefault("window", None)
    event = window_context(raw["window"]) if raw.get("window") else None
    context = {"facts": facts, "profile": raw or None, "event": event, "host": host,
               "expected": expected if expected else Unavailable("capacity model unavailable")}
    engine = Engine([])
    engine.checks = load_catalog([("catalog", catalog_text)], engine)
    return [r.as_dict() for r in engine.evaluate(host, context)]


def _filter_line(result: Mapping[str, Any]) -> str:
    """Ansible filter: one finding as one line for a play's output."""
    item = f" [{result['item']}]" if result.get("item") else ""
    return (f"{str(result['status']).upper()} {result['check']}{item} ({result['failure_mode']}): "
            f"{result['observed']} | expected: {result['expected']} | fix: {result['remediation']}")


def window_context(window: Mapping[str, Any]) -> dict[str, Any]:
    """A raw opsctl_event.window mapping -> the `event` a catalog sees (timezone-aware times).

    Read by events.parse_window, as the CLI reads it: raises WindowError (a ValueError)."""
    return events.context(events.parse_window(window))
