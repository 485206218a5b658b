"""`opsctl check` output: a table for people, JSON, JUnit XML and Markdown for CI."""

from __future__ import annotations

import fnmatch
import xml.etree.ElementTree as ET
from collections import Counter

from rich.console import Console, Group as Stack, RenderableType
from rich.table import Table
from rich.text import Text

from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import Result

from opsctl.checks import grouped_view
from opsctl.checks.grouped_view import one_line
from opsctl.checks.grouping import ORDER, compress_hosts, group_report, natural_key
from opsctl.checks.run import Report
from opsctl.safetext import markdown_cell, plain, visible, xml_text

STYLE = grouped_view.STYLE
GROUPED_SUITE = "opsctl check: findings grouped across hosts"   # no inventory host is named so


def _not_passed(report: Report) -> list[Result]:
    return sorted((r for r in report.results if r.status != "pass"),
                  key=lambda r: (ORDER[r.status], natural_key(r.host), r.failure_mode, r.check))


def _summary(report: Report) -> str:
    counts = Counter(r.status for r in report.results)
    errors = sum(h.status == "error" for h in report.hosts)
    return (f"{report.verdict.upper()}: {len(report.hosts)} hosts ({errors} unreachable or failed), "
            f"{counts['fail']} fail, {counts['warn']} warn, {counts['error']} error, {counts['pass']} pass "
            f"in {report.wall_s:.1f}s (--fail-on {report.fail_on})")


def print_table(console: Console, report: Report, verbose: int = 0, hosts: str | None = None) -> None:
    """The fleet's findings grouped across hosts (passes too with -v); with -v or --hosts PATTERN,
    each host's results as well (PATTERN's hosts only, instead of the groups). The verdict is
    the last line, and always the whole fleet's."""
    if hosts is None:
        _print_groups(console, report, passes=verbose > 0)
    if verbose or hosts is not None:
        _print_details(console, report, verbose, hosts)
    style = "bold green" if report.ready else "bold red"
    console.print(Text(_summary(report), style=style), soft_wrap=not console.is_terminal)


def _print_groups(console: Console, report: Report, passes: bool) -> None:
    groups = group_report(report, passes)
    if not groups:
        return
    if console.is_terminal:
        grouped_view.print_groups(console, groups, len(report.hosts))
    else:
        for group in groups:
            console.print(Text(grouped_view.plain_line(group)), soft_wrap=True)


def matches(name: str, pattern: str | None) -> bool:
    """Whether --hosts PATTERN (a shell glob: web7, web1*) names host NAME; no pattern names all."""
    return pattern is None or fnmatch.fnmatchcase(name, pattern)


def _print_details(console: Console, report: Report, verbose: int, pattern: str | None) -> None:
    """Each host's own results, as they came: the whole text of every finding (of every result with -v)."""
    errors = [h for h in report.hosts if h.status == "error" and matches(h.name, pattern)]
    rows = [r for r in (report.results if verbose else _not_passed(report)) if matches(r.host, pattern)]
    rows = sorted(rows, key=lambda r: (ORDER[r.status], natural_key(r.host), r.failure_mode, r.check))
    if not console.is_terminal:
        for h in errors:
            console.print(Text(f"ERROR {one_line(h.name)} ({one_line(h.address)})  {one_line(h.error)}"), soft_wrap=True)
        for r in rows:
            console.print(Text(_detail_line(r)), soft_wrap=True)
        return
    if errors:
        table = Table(title="hosts not checked", title_justify="left", show_lines=False)
        for col in ("host", "address", "error"):
            table.add_column(col, overflow="fold")
        for h in errors:
            table.add_row(plain(h.name), plain(h.address), Text(visible(h.error), style="magenta"))
        console.print(table)
    if rows:
        title = ("all results" if verbose else "findings") + (f" on {visible(pattern)}" if pattern else "")
        console.print(_results_table(Text(title), rows))


def _results_table(title: Text, rows: list[Result]) -> Stack:
    """Each result as a block: its heading on one line, then observed, expected and fix, each
    wrapped to the terminal's whole width (a column each would wrap them into towers at 80)."""
    blocks: list[RenderableType] = [Text.assemble(title, style="italic")]
    for r in rows:
        heading = Text.assemble((f"{r.status.upper():5} ", STYLE[r.status]), (visible(r.host), "bold"), "  ",
                                (visible(r.check), "bold"), f"  {one_line(r.item)}" if r.item else "",
                                (f"  {r.failure_mode}", "dim"))
        grid = Table.grid(padding=(0, 1, 0, 0))
        grid.add_column(width=5)
        grid.add_column(width=8, style="dim")
        grid.add_column(ratio=1, overflow="fold")
        for label, text in (("observed", r.observed), ("expected", r.expected), ("fix", r.remediation)):
            if text:
                grid.add_row("", label, plain(text))
        blocks += [heading, grid]
    return Stack(*blocks)


def _detail_line(r: Result) -> str:
    """One host's result as one line for files and pipes."""
    item = f" [{one_line(r.item)}]" if r.item else ""
    return (f"{r.status.upper()} {one_line(r.host)} {one_line(r.check)}{item}  observed {one_line(r.observed)}  "
            f"expected {one_line(r.expected)}  fix: {one_line(r.remediation)}")


def junit(report: Report) -> str:
    """One testsuite per host; one testcase per check (and item); unreachable hosts as errors."""
    suites = ET.Element("testsuites", name="opsctl check", time=f"{report.wall_s:.2f}")
    _junit_groups(suites, report)
    by_host: dict[str, list[Result]] = {}
    for r in report.results:
        by_host.setdefault(r.host, []).append(r)
    for h in report.hosts:
        results = by_host.get(h.name, [])
        suite = ET.SubElement(suites, "testsuite", name=xml_text(h.name), tests=str(max(len(results), 1)),
                              failures=str(sum(r.status in ("fail", "warn") for r in results)),
                              errors=str(sum(r.status == "error" for r in results) + (h.status == "error")),
                              time=f"{h.elapsed_s:.2f}")
        if h.status == "error":
            case = ET.SubElement(suite, "testcase", classname=xml_text(h.name), name="reachable")
            ET.SubElement(case, "error", message=xml_text(h.error)).text = xml_text(h.error)
        for r in results:
            name = xml_text(r.check + (f" [{r.item}]" if r.item else ""))
            case = ET.SubElement(suite, "testcase", classname=xml_text(f"{h.name}.{r.failure_mode}"), name=name)
            text = xml_text(f"observed: {r.observed}\nexpected: {r.expected}\nremediation: {r.remediation}")
            if r.status in ("fail", "warn"):
                ET.SubElement(case, "failure", message=xml_text(f"{r.severity}: {r.title}"), type=r.severity).text = text
            elif r.status == "error":
                ET.SubElement(case, "error", message=xml_text(r.observed)).text = text
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)


def _junit_groups(suites: ET.Element, report: Report) -> None:
    """The grouped summary first, as the output of a suite with no test cases of its own: CI shows
    it, and counts each failure once, on its host."""
    groups = group_report(report)
    if groups:
        summary = ET.SubElement(suites, "testsuite", name=GROUPED_SUITE, tests="0", failures="0", errors="0", time="0")
        ET.SubElement(summary, "system-out").text = xml_text("\n".join(grouped_view.plain_line(g) for g in groups))


def _markdown_groups(report: Report) -> list[str]:
    groups = group_report(report)
    if not groups:
        return []
    lines = ["## Findings grouped across hosts", "", "| status | check | hosts | observed | expected | remediation |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {g.status} | {markdown_cell(g.check + (' ' + g.item if g.item else '') if g.check else g.title)} | "
              f"{len(g.hosts)}: {markdown_cell(compress_hosts(g.hosts))} | {markdown_cell(g.observed)} | {markdown_cell(g.expected)} | "
              f"{markdown_cell(g.remediation)} |" for g in groups]
    return lines + [""]


def markdown(report: Report) -> str:
    lines = [f"# opsctl check: {report.verdict}", "", _summary(report), ""] + _markdown_groups(report)
    errors = [h for h in report.hosts if h.status == "error"]
    if errors:
        lines += ["## Hosts not checked", "", "| host | address | error |", "|---|---|---|"]
        lines += [f"| {markdown_cell(h.name)} | {markdown_cell(h.address)} | {markdown_cell(h.error)} |" for h in errors] + [""]
    rows = _not_passed(report)
    if rows:
        lines += ["## Findings", "", "| status | host | check | mode | observed | expected | remediation |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.status} | {markdown_cell(r.host)} | {markdown_cell(r.check + (' ' + r.item if r.item else ''))} | "
                  f"{r.failure_mode} | {markdown_cell(r.observed)} | {markdown_cell(r.expected)} | {markdown_cell(r.remediation)} |"
                  for r in rows]
    return "\n".join(lines) + "\n"


def progress_line(done: int, total: int, errors: int, last: str) -> Text:
    text = f"checking {total} hosts: {done} answered, {errors} failed{'; last ' + visible(last) if last else ''}"
    return Text(text)
