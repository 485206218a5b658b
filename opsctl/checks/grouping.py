"""A fleet's report read at a glance: the same finding on many hosts is one group.

A group is one check and item with one status, expected value and remediation (or one error that
kept hosts from being checked), the hosts it holds, and what each of them observed. Host names
are written as ranges (web[01-98], web100) and observed values summed up (one value, a numeric
range, or the usual value and its outliers), so 100 hosts with the same 17 findings read as 17
lines, not 1,700. Pure functions over a Report: output.py and run.py render them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Sequence

if TYPE_CHECKING:   # run.py renders groups into its JSON: no import back at run time
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import Result

    from opsctl.checks.run import HostOutcome, Report

ORDER = {"error": 0, "fail": 1, "warn": 2, "pass": 3}
FEW = 3                 # outliers are named, host by host, up to this many hosts
HOST_ERROR = "host not checked"

_DIGITS = re.compile(r"(\d+)")
# A number inside an observed value, with its unit if one is attached: a count, a size, a time
# (60s, 4.7s), a negative backlog (-1); not the digits of a word such as php8.2 or web7, which
# belong to the text around them.
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:[a-zA-Z%]+\b)?")
_FIGURE = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class Value:
    """One observed value and the hosts that observed it."""
    observed: str
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class Group:
    kind: str                   # check: a finding of the catalog; host: hosts that could not be checked
    status: str                 # error | fail | warn | pass
    check: str
    item: str
    title: str
    severity: str
    failure_mode: str
    expected: str
    remediation: str
    values: tuple[Value, ...]   # most hosts first

    @property
    def hosts(self) -> list[str]:
        return natural_sorted(h for v in self.values for h in v.hosts)

    @property
    def observed(self) -> str:
        return summarize(self.values)


# --- host names ---------------------------------------------------------------------------------

def _number_key(digits: str) -> tuple[int, str]:
    """A run of digits in the order of its number, without int(): a name is anyone's text, and
    int() refuses more than 4300 digits."""
    significant = digits.lstrip("0")
    return len(significant), significant


def natural_key(name: str) -> tuple:
    """web2 before web10: numbers compare as numbers; the raw name breaks ties (web01, web1)."""
    return tuple(_number_key(p) if i % 2 else p for i, p in enumerate(_DIGITS.split(name))), name


def natural_sorted(names: Iterable[str]) -> list[str]:
    return sorted(set(names), key=natural_key)


@dataclass
class _Run:
    """Consecutive names that differ in one number: web01, web02, web03."""
    names: list[list[str]]      # each name split at its numbers: the odd places are numbers
    at: int | None = None       # the place it counts in, once it has two names

    def place_of(self, parts: list[str]) -> int | None:
        """Where PARTS continues the run (one number one higher, in the run's zero padding), or None."""
        last = self.names[-1]
        differ = [i for i, (a, b) in enumerate(zip(last, parts)) if a != b]
        if len(parts) != len(last) or len(differ) != 1 or differ[0] % 2 == 0 or self.at not in (None, differ[0]):
            return None
        at, start = differ[0], self.names[0][differ[0]]
        if max(len(parts[at]), len(last[at])) > 18:   # no fleet counts that far; int() refuses 4300 digits
            return None
        width = len(start) if start.startswith("0") else 1
        number = int(parts[at])
        return at if number == int(last[at]) + 1 and parts[at] == str(number).zfill(width) else None

    def text(self) -> str:
        if self.at is None:
            return "".join(self.names[0])
        parts = list(self.names[0])
        parts[self.at] = f"[{self.names[0][self.at]}-{self.names[-1][self.at]}]"
        return "".join(parts)


def _runs(names: list[str]) -> list[_Run]:
    runs: list[_Run] = []
    for name in names:
        parts = _DIGITS.split(name)
        at = runs[-1].place_of(parts) if runs else None
        if at is None:
            runs.append(_Run([parts]))
        else:
            runs[-1].names.append(parts)
            runs[-1].at = at
    return runs


def _last_number_first(name: str) -> tuple:
    """web01.dc1, web02.dc1 before web01.dc2: names of one shape, by their last number first."""
    parts = _DIGITS.split(name)
    return tuple(parts[0::2]), tuple(_number_key(p) for p in reversed(parts[1::2])), name


def compress_hosts(names: Iterable[str]) -> str:
    """Host names as ranges, naturally sorted: web01..web98 and web100 are 'web[01-98], web100'.

    A range counts in one number of the name (the others stay as they are) and keeps its zero
    padding; names without a number, or out of step, are listed as they are. Names with two
    numbers count in the first (rack1-web[01-40]) or, when that makes fewer or shorter ranges,
    in the last (web[01-40].dc1).
    """
    ordered = natural_sorted(names)
    ways = [[run.text() for run in _runs(order)] for order in (ordered, sorted(ordered, key=_last_number_first))]
    return ", ".join(min(ways, key=lambda texts: (len(texts), len("".join(texts)))))


# --- observed values ----------------------------------------------------------------------------

def _slots(values: Sequence[str]) -> tuple[list[str], list[tuple[str, ...]]] | None:
    """VALUES that differ only in their numbers, as the text around the numbers and, for each
    number's place, what every value has there; None when they differ in words too."""
    shapes = [(_NUMBER.sub("\0", v), _NUMBER.findall(v)) for v in values]
    if len({shape for shape, _ in shapes}) != 1:
        return None
    return shapes[0][0].split("\0"), list(zip(*(numbers for _, numbers in shapes)))


def _fill(text: list[str], shown: Iterable[str]) -> str:
    return text[0] + "".join(number + rest for number, rest in zip(shown, text[1:]))


def _figure(number: str) -> float:
    return float(_FIGURE.match(number).group())   # type: ignore[union-attr]  # _NUMBER starts with one


def numeric_range(values: Sequence[str]) -> str | None:
    """VALUES that differ only in their numbers, written once with each differing number as
    low..high ('net.core.somaxconn = 128..65535'); None when they differ in words too."""
    found = _slots(values)
    if found is None:
        return None
    text, slots = found

    def span(seen: tuple[str, ...]) -> str:
        low, high = min(seen, key=_figure), max(seen, key=_figure)
        return low if low == high else f"{low}..{high}"
    return _fill(text, (span(seen) for seen in slots))


def _named_outliers(usual: Value, others: Sequence[Value]) -> str:
    """The usual value with the few hosts that differ named where they differ: 'somaxconn = 4096
    (web7: 128)'; or, when they differ in words, after it."""
    found = _slots([usual.observed] + [v.observed for v in others])
    if found is None:
        named = "; ".join(f"{compress_hosts(v.hosts)}: {v.observed}" for v in others)
        return f"{usual.observed} on {_hosts(len(usual.hosts))}; {named}"
    text, slots = found

    def marked(seen: tuple[str, ...]) -> str:
        odd: dict[str, list[str]] = defaultdict(list)
        for value, number in zip(others, seen[1:]):
            if number != seen[0]:
                odd[number] += value.hosts
        named = ", ".join(f"{compress_hosts(hosts)}: {number}" for number, hosts in odd.items())
        return seen[0] + (f" ({named})" if named else "")
    return _fill(text, (marked(seen) for seen in slots))


def summarize(values: Sequence[Value]) -> str:
    """What a group's hosts observed, in one line: the value they agree on; the usual value and
    the few hosts that differ, by name; the range of a number; or the usual value and a count."""
    usual, others = values[0], values[1:]
    if not others:
        return usual.observed
    outliers = sum(len(v.hosts) for v in others)
    if outliers <= FEW and outliers < len(usual.hosts):
        return _named_outliers(usual, others)
    ranged = numeric_range([v.observed for v in values])
    if ranged is not None:
        return ranged
    return f"{usual.observed} on {_hosts(len(usual.hosts))}, {len(others)} other value{'s' if len(others) > 1 else ''} on the rest"


def _hosts(count: int) -> str:
    return f"{count} host{'s' if count != 1 else ''}"


# --- grouping -----------------------------------------------------------------------------------

def _values(by_value: dict[str, list[str]]) -> tuple[Value, ...]:
    values = [Value(observed, tuple(natural_sorted(hosts))) for observed, hosts in by_value.items()]
    return tuple(sorted(values, key=lambda v: (-len(v.hosts), natural_key(v.hosts[0]))))


def _result_groups(results: Iterable[Result]) -> list[Group]:
    found: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        key = (r.status, r.check, r.item, r.title, r.severity, r.failure_mode, r.expected, r.remediation)
        found[key][r.observed].append(r.host)
    return [Group("check", status, check, item, title, severity, mode, expected, remediation, _values(by_value))
            for (status, check, item, title, severity, mode, expected, remediation), by_value in found.items()]


def host_error(outcome: HostOutcome) -> str:
    """The host's error with its own address taken out, so that every host the same problem
    stopped ('no answer from root@10.0.0.7:22 within 5s') shares one text."""
    if not outcome.address:
        return outcome.error
    return re.sub(rf"(?<![\w.-]){re.escape(outcome.address)}(?![\w-]|\.\w)", "<address>", outcome.error)


def _host_groups(hosts: Iterable[HostOutcome]) -> list[Group]:
    by_error: dict[str, list[str]] = defaultdict(list)
    for h in hosts:
        if h.status == "error":
            by_error[host_error(h)].append(h.name)
    return [Group("host", "error", "", "", HOST_ERROR, "", "", "", "", (Value(error, tuple(natural_sorted(names))),))
            for error, names in by_error.items()]


def group_report(report: Report, passes: bool = False) -> list[Group]:
    """Every group of REPORT, errors first (hosts not checked before checks that erred), then
    fail and warn (and pass with PASSES); within a status by failure mode, check and item."""
    results = (r for r in report.results if passes or r.status != "pass")
    groups = _host_groups(report.hosts) + _result_groups(results)
    return sorted(groups, key=lambda g: (ORDER[g.status], g.kind != "host", g.failure_mode, g.check,
                                         natural_key(g.item), -len(g.hosts), g.expected))
