"""What a person sees during and after a rolling reload."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from opsctl.rolling import STEPS, Follower, RolloutPlan
from opsctl.safetext import plain

_STATE_STYLE = {"waiting": "dim", "running": "yellow", "done": "green", "failed": "bold red"}


def print_plan(console: Console, plan: RolloutPlan) -> None:
    console.print(f"Rolling {plan.mode} of {plan.service}: {sum(map(len, plan.batches))} hosts in "
                  f"{len(plan.batches)} batches; steps per host: {' -> '.join(STEPS)}")
    console.print(plain("Balancers touched: " + (", ".join(plan.balancers) or "none (hosts are not drained)")))
    if plan.skipped:
        console.print(plain("Skipped (before --resume-from): " + ", ".join(plan.skipped)))
    for number, batch in enumerate(plan.batches, 1):
        console.print(plain(f"  batch {number}: {', '.join(batch)}"))


def live_table(follower: Follower) -> Group:
    hosts = list(follower.hosts.values())
    done = sum(p.state == "done" for p in hosts)
    header = Text(f"{done}/{len(hosts)} hosts done, {len(hosts) - done} left, "
                  f"{time.monotonic() - follower.started:.0f}s elapsed")
    table = Table(box=None, pad_edge=False)
    for column in ("host", "step", "state", "seconds"):
        table.add_column(column)
    for p in hosts:
        table.add_row(plain(p.name), plain(p.step), Text(p.state, style=_STATE_STYLE[p.state]),
                      f"{p.seconds:.1f}" if p.started else "")
    return Group(header, table)


def print_summary(console: Console, follower: Follower, artifact_dir: str) -> None:
    table = Table(title="Rolling reload", title_justify="left")
    for column in ("host", "result", "seconds", *STEPS, "detail"):
        table.add_column(column)
    for p in follower.hosts.values():
        steps = p.step_seconds()
        result = {"done": "reloaded", "failed": f"failed at {p.step}", "waiting": "untouched",
                  "running": "interrupted"}[p.state]
        table.add_row(plain(p.name), Text(result, style=_STATE_STYLE[p.state]), f"{p.seconds:.1f}" if p.started else "",
                      *[f"{steps[s]:.1f}" if s in steps else "" for s in STEPS], plain(p.message))
    console.print(table)
    console.print(plain(f"Ansible artifacts: {artifact_dir}"))
