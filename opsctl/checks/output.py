"""`opsctl check` output: a table for people, JSON, JUnit XML and Markdown for CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import Result

from opsctl.checks.run import Report
from opsctl.safetext import plain, visible, xml_text

STYLE = {"fail": "bold red", "warn": "yellow", "error": "magenta", "pass": "green"}
ORDER = {"error": 0, "fail": 1, "warn": 2, "pass": 3}


def _not_passed(report: Report) -> list[Result]:
    return sorted((r for r in report.results if r.status != "pass"),
                  key=lambda r: (ORDER[r.status], r.host, r.failure_mode, r.check))


def _summary(report: Report) -> str:
    counts = Counter(r.status for r in report.results)
    errors = sum(h.status == "error" for h in report.hosts)
    return (f"{report.verdict.upper()}: {len(report.hosts)} hosts ({errors} unreachable or failed), "
            f"{counts['fail']} fail, {counts['warn']} warn, {counts['error']} error, {counts['pass']} pass "
            f"in {report.wall_s:.1f}s (--fail-on {report.fail_on})")


def print_table(console: Console, report: Report, verbose: int = 0) -> None:
    errors = [h for h in report.hosts if h.status == "error"]
    if errors:
        table = Table(title="hosts not checked", title_justify="left", show_lines=False)
        for col in ("host", "address", "error"):
            table.add_column(col, overflow="fold")
        for h in errors:
            table.add_row(plain(h.name), plain(h.address), Text(visible(h.error), style="magenta"))
        console.print(table)
    rows = report.results if verbose else _not_passed(report)
    rows = sorted(rows, key=lambda r: (ORDER[r.status], r.host, r.failure_mode, r.check))
    if rows:
        table = Table(title="findings" if not verbose else "all results", title_justify="left", show_lines=True)
        for col, width in (("status", 6), ("host", 8), ("check", 22), ("observed", 46), ("expected", 34),
                           ("remediation", 36)):
            table.add_column(col, overflow="fold", min_width=min(width, 10), ratio=width)
        for r in rows:
            check = Text.assemble(visible(r.check), "\n",
                                  (f"{r.failure_mode}{' ' + visible(r.item) if r.item else ''}", "dim"))
            table.add_row(Text(r.status, style=STYLE[r.status]), plain(r.host), check, plain(r.observed),
                          plain(r.expected), plain(r.remediation))
        console.print(table)
    style = "bold green" if report.ready else "bold red"
    console.print(Text(_summary(report), style=style))


def junit(report: Report) -> str:
    """One testsuite per host; one testcase per check (and item); unreachable hosts as errors."""
    suites = ET.Element("testsuites", name="opsctl check", time=f"{report.wall_s:.2f}")
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


def _cell(text: str) -> str:
    """A Markdown table cell: one line, no column breaks, no HTML a ticket system would render."""
    return visible(text).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def markdown(report: Report) -> str:
    lines = [f"# opsctl check: {report.verdict}", "", _summary(report), ""]
    errors = [h for h in report.hosts if h.status == "error"]
    if errors:
        lines += ["## Hosts not checked", "", "| host | address | error |", "|---|---|---|"]
        lines += [f"| {_cell(h.name)} | {_cell(h.address)} | {_cell(h.error)} |" for h in errors] + [""]
    rows = _not_passed(report)
    if rows:
        lines += ["## Findings", "", "| status | host | check | mode | observed | expected | remediation |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.status} | {_cell(r.host)} | {_cell(r.check + (' ' + r.item if r.item else ''))} | "
                  f"{r.failure_mode} | {_cell(r.observed)} | {_cell(r.expected)} | {_cell(r.remediation)} |"
                  for r in rows]
    return "\n".join(lines) + "\n"


def progress_line(done: int, total: int, errors: int, last: str) -> Text:
    text = f"checking {total} hosts: {done} answered, {errors} failed{'; last ' + visible(last) if last else ''}"
    return Text(text)
