"""The steps of a rolling reload, shared by `opsctl reload --rolling` and harden's drained
restart: print the plan, follow the run live, print the summary, and say in one line where a
stopped rollout stands. Returns the exit code."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.live import Live

from opsctl.errors import EXIT_FAILED, EXIT_OK
from opsctl.inventory import load_inventory
from opsctl.rolling import Follower, RolloutPlan, plan_rollout, run_rollout
from opsctl.rolling_view import live_table, print_plan, print_summary
from opsctl.safetext import visible
from opsctl.vault import VaultOptions, resolve


def reload_rolling(inventory: str, limit: str | None, service: str, *, mode: str = "reload", batch: str = "1",
                   resume_from: str | None = None, dry_run: bool = False, verbose: int = 0,
                   vault: VaultOptions = VaultOptions()) -> int:
    """Load the inventory, plan the batches and roll out (or, dry run, print the plan only)."""
    vault = resolve(vault)   # once: the inventory and the playbook get the same secrets
    inv = load_inventory(inventory, limit, vault)
    plan = plan_rollout(inv, service, mode, batch, resume_from)
    return roll_out(plan, inventory, inv.source, verbose=verbose, vault=vault, dry_run=dry_run)


def roll_out(plan: RolloutPlan, inventory: str, source: Path | str, *, verbose: int, vault: VaultOptions,
             dry_run: bool = False, console: Console | None = None, err: Console | None = None) -> int:
    """PLAN's rollout with a live view on stderr and the summary on stdout."""
    console, err = console or Console(), err or Console(stderr=True)
    print_plan(err, plan)
    if dry_run:
        return EXIT_OK
    follower = Follower(plan)
    with Live(live_table(follower), console=err, refresh_per_second=4, transient=True) as live:
        result = run_rollout(plan, source, verbose,
                             on_event=lambda event: (follower(event), live.update(live_table(follower))),
                             vault=vault)
    follower.finish(result)
    print_summary(console, follower, str(result.artifact_dir))
    if not follower.failed and result.rc == 0:
        return EXIT_OK
    # A plain line, not Rich's: a console narrower than the line must not break it in two.
    print(visible(follower.failure_line(plan.service, inventory, result)), file=sys.stderr)
    return EXIT_FAILED
