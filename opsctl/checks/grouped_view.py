"""The fleet's findings, grouped, as people read them: a table that fits the terminal, or plain
lines when the output goes to a file or a pipe.

Each group is at most three lines at any width: cells are wrapped to the width their column is
given and cut with an ellipsis after that (the whole text is in --hosts, -v and the other
formats). Narrow terminals move expected and fix under the row, where they get the row's width
instead of a column of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from rich.console import Console, ConsoleOptions, Group as Stack, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from opsctl.checks.grouping import Group, compress_hosts
from opsctl.safetext import visible

STYLE = {"fail": "bold red", "warn": "yellow", "error": "magenta", "pass": "green"}
WIDE = 160              # from this width on, expected and fix are columns of their own
GAP = 2                 # spaces between columns


class Clamp:
    """TEXT wrapped to the width it is given, at most LINES lines; what is left out ends in '…'."""

    def __init__(self, text: Text, lines: int, overflow: str = "fold") -> None:
        self.text, self.lines, self.overflow = text, lines, overflow

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.text)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        lines = self.text.wrap(console, width, overflow=self.overflow)  # type: ignore[arg-type]
        if len(lines) > self.lines:
            lines = lines[:self.lines]
            last = lines[-1]
            last.rstrip()
            last.truncate(width - 1)
            last.append("…")
        yield Text("\n").join(lines)


@dataclass(frozen=True)
class Budget:
    """Column widths for a terminal WIDTH columns wide; fix == 0: expected and fix go under the row."""
    status: int
    check: int
    hosts: int
    observed: int
    expected: int
    fix: int

    @property
    def wide(self) -> bool:
        return self.fix > 0


def budget(width: int, hosts_text: int = 0) -> Budget:
    """Widths for WIDTH columns when the longest hosts cell is HOSTS_TEXT wide."""
    status, check = 5, 27 if width < WIDE else 30     # ERROR; every shipped check id fits 27
    hosts = max(14, min(hosts_text, width // 9, 22))  # '95 web[1-49],' on one line at 80
    rest = max(20, width - status - check - hosts - 3 * GAP)
    if width < WIDE:
        return Budget(status, check, hosts, rest, 0, 0)
    rest -= 2 * GAP
    expected = fix = rest * 3 // 10
    return Budget(status, check, hosts, rest - expected - fix, expected, fix)


def one_line(text: str) -> str:
    """Host text as one line of a cell: its newlines and tabs would break the row's layout."""
    return visible(text).replace("\n", " ").replace("\t", " ")


def _check_cell(group: Group) -> Text:
    text = Text(one_line(group.check or group.title), style="bold")
    if group.item:
        text.append("\n" + one_line(group.item), style="dim")
    return text


def _hosts_cell(group: Group) -> Text:
    return Text.assemble((f"{len(group.hosts)} ", "bold"), one_line(compress_hosts(group.hosts)))


def _longest_hosts(groups: list[Group]) -> int:
    return max((len(_hosts_cell(g)) for g in groups), default=0)


def _labelled(label: str, text: str) -> Text:
    return Text.assemble((label + " ", "dim"), one_line(text))


def _grid(widths: Iterable[int]) -> Table:
    grid = Table.grid(padding=(0, GAP, 0, 0))
    for width in widths:
        grid.add_column(width=width, no_wrap=False, overflow="fold")
    return grid


def _columns(b: Budget) -> list[int]:
    return [b.status, b.check, b.hosts, b.observed] + ([b.expected, b.fix] if b.wide else [])


def _header(b: Budget) -> Table:
    grid = _grid(_columns(b))
    names = ["", "check / item", "hosts", "observed"] + (["expected", "fix"] if b.wide else [])
    grid.add_row(*(Text(name, style="bold underline") for name in names))
    return grid


def _under(b: Budget, group: Group) -> Table:
    """Expected and fix on one line under a narrow row, half of the row's width each."""
    span = b.check + b.hosts + b.observed + 2 * GAP
    under = Table.grid(padding=(0, GAP, 0, 0))
    under.add_column(width=b.status)
    for width in (span // 2 - GAP, span - span // 2):
        under.add_column(width=width, no_wrap=True, overflow="ellipsis")
    under.add_row("", _labelled("expected", group.expected) if group.expected else "",
                  _labelled("fix", group.remediation) if group.remediation else "")
    return under


def group_rows(b: Budget, group: Group) -> RenderableType:
    """One group: a row of up to three lines (wide), or of two lines with expected and fix under it."""
    lines = 3 if b.wide else 2
    cells = [Text(group.status.upper(), style=STYLE[group.status], no_wrap=True, overflow="ellipsis"),
             Clamp(_check_cell(group), lines, "ellipsis"), Clamp(_hosts_cell(group), lines),
             Clamp(Text(one_line(group.observed)), lines)]
    if b.wide:
        cells += [Clamp(Text(one_line(group.expected)), lines), Clamp(Text(one_line(group.remediation)), lines)]
    row = _grid(_columns(b))
    row.add_row(*cells)
    if b.wide or not (group.expected or group.remediation):
        return row
    return Stack(row, _under(b, group))


def print_groups(console: Console, groups: list[Group], hosts: int) -> None:
    b = budget(console.width, _longest_hosts(groups))
    console.print(Text(f"findings on {hosts} hosts, grouped; one host in full: --hosts NAME, all results: -v",
                       style="italic"), no_wrap=True, overflow="ellipsis")
    console.print(_header(b))
    for group in groups:
        console.print(group_rows(b, group))


def plain_line(group: Group) -> str:
    """One group as one line for files and pipes: whole texts, no box drawing, no colour."""
    check = group.check or group.title
    parts = [f"{group.status.upper()} {one_line(check)}{f' [{one_line(group.item)}]' if group.item else ''}",
             f"{len(group.hosts)} host{'s' if len(group.hosts) != 1 else ''} {one_line(compress_hosts(group.hosts))}",
             f"observed {one_line(group.observed)}" if group.kind == "check" else one_line(group.observed)]
    if group.expected:
        parts.append(f"expected {one_line(group.expected)}")
    if group.remediation:
        parts.append(f"fix: {one_line(group.remediation)}")
    return "  ".join(parts)
