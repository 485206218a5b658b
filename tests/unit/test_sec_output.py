"""Names and values from inventories and hosts are data in every output format (#11)."""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET

import pytest
from rich.console import Console

from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import Result

from opsctl.checks import output
from opsctl.checks.run import HostOutcome, Report
from opsctl.harden import Follower as HardenFollower
from opsctl.harden_view import live_table as harden_live, print_summary as harden_summary
from opsctl.rolling import Follower as RollingFollower, RolloutPlan
from opsctl.rolling_view import live_table as rolling_live, print_plan, print_summary as rolling_summary
from opsctl.safetext import visible, xml_text

HOSTILE_NAME = "web[/]x[bold red]"
ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\rover\x00"


def _report() -> Report:
    hosts = [HostOutcome(HOSTILE_NAME, "10.0.0.1", "ok"),
             HostOutcome("[/]", "[link=file:///etc]", "error", error=f"ssh said {ESCAPES}")]
    results = [Result(host=HOSTILE_NAME, check="cron-restart", title=f"t {ESCAPES}", severity="fail",
                      status="fail", observed=f"[/] {ESCAPES} :fire:", expected="[bold]x[/bold]",
                      remediation=f"fix {ESCAPES}", failure_mode="F3", item=f"/etc/cron.d/[/]{ESCAPES}")]
    return Report(hosts=hosts, results=results)


def _render(draw) -> str:
    buffer = io.StringIO()
    draw(Console(file=buffer, width=200, force_terminal=True, color_system="standard"))
    return buffer.getvalue()


def _no_foreign_escapes(text: str) -> None:
    """Only rich's own colour codes (ESC [ ... m) may be there: no clear-screen, title, CR or NUL."""
    import re
    stripped = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for bad in ("\x1b", "\x07", "\x9b", "\r", "\x00"):
        assert bad not in stripped, f"{bad!r} reached the terminal"


def test_check_table_shows_hostile_names_and_values_literally():
    text = _render(lambda c: output.print_table(c, _report(), verbose=1))
    _no_foreign_escapes(text)
    assert "web[/]x[bold red]" in text and "[bold]x[/bold]" in text and ":fire:" in text
    assert "\\x1b[2J" in text    # shown, so a person sees that something odd was there


def test_junit_is_well_formed_xml_with_hostile_values():
    xml = output.junit(_report())
    root = ET.fromstring(xml)        # raises on raw control characters
    assert any(s.get("name") == HOSTILE_NAME for s in root.iter("testsuite"))
    assert "\\x1b" in xml and "\x1b" not in xml and "\x00" not in xml


def test_markdown_has_one_line_per_row_no_html_no_escapes():
    text = output.markdown(_report())
    _no_foreign_escapes(text)
    rows = [line for line in text.splitlines() if line.startswith(("| fail", "| error"))]
    # The finding grouped across hosts, the host that was not checked, and the finding on its host.
    assert len(rows) == 3 and not any("<" in row for row in rows), rows


def test_progress_line_is_not_markup():
    text = _render(lambda c: c.print(output.progress_line(1, 2, 0, HOSTILE_NAME + ESCAPES)))
    _no_foreign_escapes(text)
    assert HOSTILE_NAME in text


def test_harden_views_show_hostile_host_names():
    follower = HardenFollower([HOSTILE_NAME, "[/]"])
    text = _render(lambda c: (c.print(harden_live(follower)), harden_summary(c, follower, "/tmp/[/]", False)))
    _no_foreign_escapes(text)
    assert HOSTILE_NAME in text and "/tmp/[/]" in text


def test_rolling_views_show_hostile_host_names():
    plan = RolloutPlan(service="php-fpm", mode="reload", batches=[[HOSTILE_NAME], ["[/]"]], skipped=["[b]"],
                       balancers=[f"lb[/] (nginx, upstream {ESCAPES})"])
    follower = RollingFollower(plan)
    text = _render(lambda c: (print_plan(c, plan), c.print(rolling_live(follower)), rolling_summary(c, follower, "[/]")))
    _no_foreign_escapes(text)
    assert HOSTILE_NAME in text and "lb[/]" in text


@pytest.mark.parametrize("raw,shown", [("a\x1bb", "a\\x1bb"), ("tab\tnl\n", "tab\tnl\n"), ("\x9b", "\\x9b"),
                                       ("plain", "plain")])
def test_visible(raw, shown):
    assert visible(raw) == shown


def test_xml_text_drops_nothing_silently():
    assert xml_text("a\x00\ud800b") == "a\\x00\\ud800b"


def test_inventory_table_shows_hostile_names():
    from pathlib import Path

    from opsctl.inventory import Group, Host, Inventory
    from opsctl.report import print_inventory

    inv = Inventory(source=Path("/tmp/[/]inv"), groups=(Group("web[/]", (HOSTILE_NAME,), None, "/x/[b]"),),
                    hosts=(Host(HOSTILE_NAME, f"10.0.0.1{ESCAPES}", 22, "[/]", ("web[/]",), {}),))
    text = _render(lambda c: print_inventory(c, inv, verbose=1))
    _no_foreign_escapes(text)
    assert HOSTILE_NAME in text and "web[/]" in text and "/x/[b]" in text
