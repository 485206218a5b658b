"""What a person sees during and after `opsctl harden`, and `--explain` for people and scripts."""

from __future__ import annotations

import difflib
import time
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from opsctl.harden import DiffRecord, Follower, HostPlan
from opsctl.safetext import plain, visible

_STYLE = {"waiting": "dim", "running": "yellow", "done": "green", "failed": "bold red", "unreachable": "bold red"}


def live_table(follower: Follower) -> Group:
    runs = list(follower.hosts.values())
    done = sum(r.state != "running" and r.state != "waiting" for r in runs)
    header = Text(f"harden: {done}/{len(runs)} hosts finished, {time.monotonic() - follower.started:.0f}s elapsed")
    table = Table(box=None, pad_edge=False)
    for column in ("host", "state", "changed", "current task"):
        table.add_column(column)
    for r in runs:
        table.add_row(plain(r.name), Text(r.state, style=_STYLE[r.state]), str(r.changed),
                      Text(visible(r.task if r.state == "running" else r.message), overflow="ellipsis", no_wrap=True))
    return Group(header, table)


def print_summary(console: Console, follower: Follower, artifact_dir: str, check: bool) -> None:
    table = Table(title="harden" + (" (dry run: nothing changed)" if check else ""), title_justify="left")
    for column in ("host", "result", "ok", "changed", "failed", "unreachable", "detail"):
        table.add_column(column)
    for r in follower.hosts.values():
        result = {"done": "converged" if not r.pending_restart else "converged, pending restart"}.get(r.state, r.state)
        table.add_row(plain(r.name), Text(result, style=_STYLE.get(r.state, "")), str(r.ok), str(r.changed),
                      str(r.failed), str(r.unreachable), plain(r.message))
    console.print(table)
    console.print(plain(f"Ansible artifacts: {artifact_dir}"))


def _diff_text(record: DiffRecord) -> list[str]:
    diff = record.diff
    if "prepared" in diff:
        return str(diff["prepared"]).splitlines()
    before, after = diff.get("before", ""), diff.get("after", "")
    if not isinstance(before, str) or not isinstance(after, str):
        return [f"- {before!r}", f"+ {after!r}"]
    return list(difflib.unified_diff(before.splitlines(), after.splitlines(),
                                     str(diff.get("before_header", "before")),
                                     str(diff.get("after_header", "after")), lineterm=""))


def print_diffs(console: Console, diffs: list[DiffRecord]) -> None:
    if not diffs:
        console.print("No differences.")
        return
    for record in diffs:
        console.print(Text(visible(f"--- {record.host}: {record.task}"), style="bold"))
        for line in _diff_text(record):
            style = "green" if line.startswith("+") else "red" if line.startswith("-") else ""
            console.print(Text(visible(line), style=style))


def print_explain(console: Console, plans: list[HostPlan]) -> None:
    for p in plans:
        if p.error:
            console.print(Text(visible(f"{p.host}: {p.error.removeprefix(p.host + ': ')}"), style="bold red"))
            continue
        f = p.facts
        title = (f"{p.host}: {f.get('cpus')} CPUs, {f.get('memory_mb')} MB, "
                 f"php-fpm {f.get('php_version') or 'absent'}, nginx {'present' if f.get('nginx') else 'absent'}")
        table = Table(title=plain(title), title_justify="left")
        for column in ("setting", "value", "reason"):
            table.add_column(column, overflow="fold")
        for key, decision in p.plan.items():
            if key == "php_fpm.pools":
                _add_pool_rows(table, decision)
            else:
                table.add_row(plain(key), plain(decision["value"]), plain(decision["reason"]))
        console.print(table)


def _add_pool_rows(table: Table, decision: dict[str, Any]) -> None:
    """The model's split: its rule, then one row per pool with that pool's own arithmetic."""
    pools = decision["value"]
    table.add_row("php_fpm.pools", plain(f"{len(pools)} pool(s)"), plain(decision["reason"]))
    for label, share in pools.items():
        value = (f"{share['pm_max_children']} workers, backlog {share['listen_backlog']}, "
                 f"{share['peak_qps']:g} qps")
        table.add_row(plain(f"  {label}"), plain(value), plain(share["reason"]))


def explain_json(plans: list[HostPlan]) -> list[dict[str, Any]]:
    return [{"host": p.host, "facts": p.facts, "error": p.error or None, "plan": p.plan} for p in plans]
