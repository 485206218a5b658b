"""The steps of `opsctl harden`: probe and plan, refuse bad input, run the playbook with a live
view, then restart (drained, graceful, one host at a time) what a reload could not apply."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from rich.console import Console
from rich.live import Live

from opsctl import harden as hd
from opsctl.errors import EXIT_FAILED, EXIT_OK
from opsctl.harden_view import explain_json, live_table, print_diffs, print_explain, print_summary
from opsctl.inventory import Inventory, load_inventory
from opsctl.logrotate_plan import refuse_before_apply
from opsctl.safetext import visible
from opsctl.vault import VaultOptions, resolve


@dataclass(frozen=True)
class HardenOptions:
    inventory: str
    limit: str | None
    verbose: int
    check: bool
    diff: bool
    tags: str | None
    explain: bool
    restart: bool
    fmt: str
    vault: VaultOptions = field(default_factory=VaultOptions)


def run_harden(opts: HardenOptions) -> int:
    opts = replace(opts, vault=resolve(opts.vault))   # once: every load and playbook gets the same secrets
    inv = load_inventory(opts.inventory, opts.limit, opts.vault)
    tags = hd.check_tags(opts.tags)
    if tags is None or "logrotate" in tags.split(","):
        refuse_before_apply(opts.inventory, inv, opts.vault)
    console, err = Console(), Console(stderr=True)
    with err.status("probing hosts for the capacity model"):
        plans = hd.plan_hosts(inv)
    if opts.explain:
        if opts.fmt == "json":
            print(json.dumps(explain_json(plans), indent=2))
        else:
            print_explain(console, plans)
        return EXIT_OK if all(not p.error for p in plans) else EXIT_FAILED
    hd.refuse_bad_input(plans)
    follower, ok, line = _apply(inv, opts, tags, console, err)
    if not ok:
        err.print(visible(f"opsctl: harden did not converge: {line}"), markup=False, highlight=False)
        return EXIT_FAILED
    return _restarts(follower, opts, console, err)


def apply_alone(playbook: str, opts: HardenOptions) -> int:
    """One part of harden on its own (`opsctl logrotate apply`): same view, same exit codes."""
    opts = replace(opts, vault=resolve(opts.vault))
    inv = load_inventory(opts.inventory, opts.limit, opts.vault)
    if playbook == "logrotate":
        refuse_before_apply(opts.inventory, inv, opts.vault)
    console, err = Console(), Console(stderr=True)
    _, ok, line = _apply(inv, opts, None, console, err, playbook)
    if not ok:
        err.print(visible(f"opsctl: {playbook} did not converge: {line}"), markup=False, highlight=False)
    return EXIT_OK if ok else EXIT_FAILED


def _apply(inv: Inventory, opts: HardenOptions, tags: str | None, console: Console,
           err: Console, playbook: str = hd.PLAYBOOK) -> tuple[hd.Follower, bool, str]:
    follower = hd.Follower([h.name for h in inv.hosts])
    with Live(live_table(follower), console=err, refresh_per_second=4, transient=True) as live:
        result = hd.run(inv, tags=tags, check=opts.check, diff=opts.diff, verbose=opts.verbose,
                        on_event=lambda event: (follower(event), live.update(live_table(follower))),
                        playbook=playbook, vault=opts.vault)
    follower.finish(result)
    if opts.diff:
        print_diffs(console, follower.diffs)
    print_summary(console, follower, str(result.artifact_dir), opts.check)
    converged = follower.converged(result)
    return follower, converged, "" if converged else follower.failure_line(result)


def _restarts(follower: hd.Follower, opts: HardenOptions, console: Console, err: Console) -> int:
    pending = follower.pending
    if not pending:
        return EXIT_OK
    if opts.check or not opts.restart:
        for name in pending:
            console.print(visible(f"{name}: pending restart (php-fpm applies listen.backlog only on a stop and start); "
                          f"apply with: {hd.restart_command(opts.inventory, [name])}"), markup=False, highlight=False)
        return EXIT_OK
    return _rolling_restart(pending, opts, console, err)


def _rolling_restart(pending: list[str], opts: HardenOptions, console: Console, err: Console) -> int:
    from opsctl.rolling import plan_rollout
    from opsctl.rolling_flow import roll_out

    sub = load_inventory(opts.inventory, ",".join(pending), opts.vault)
    plan = plan_rollout(sub, "php-fpm", "restart", "1", None)
    return roll_out(plan, opts.inventory, sub.source, verbose=opts.verbose, vault=opts.vault,
                    console=console, err=err)
