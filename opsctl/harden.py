"""`opsctl harden`: size each host with the capacity model, run opsctl.fleet.harden, follow
every host live, then restart (drained, graceful) the hosts holding settings a reload cannot
apply.

Before anything changes, every selected host is probed over SSH (one round trip, the same
probe script the opsctl_capacity role runs) and its plan derived here: a profile or override
the model refuses is bad input (exit 2) and no host is touched. `--explain` stops there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import CapacityError, derive, facts_problem
from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import inventory_problem

from opsctl.errors import OpsctlError
from opsctl.inventory import Host, Inventory
from opsctl.probe import probe_script
from opsctl.runner import Event, RunResult, run_playbook
from opsctl.vault import VaultOptions

PLAYBOOK = "harden"
# The set_stats data harden.yml records for a host whose settings wait for a drained restart.
PENDING_MARK = "opsctl_pending_restart"
TAGS = ("sysctl", "limits", "php_fpm", "nginx", "lifecycle", "logrotate")


@dataclass(frozen=True)
class HostPlan:
    host: str
    facts: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, dict] = field(default_factory=dict)
    error: str = ""          # unreachable, or why the model refused
    refused: bool = False    # the model refused (bad input), as opposed to unreachable




def plan_host(host: Host, facts: Any) -> HostPlan:
    """The capacity plan of one probed host, with the inventory's overrides; a value the
    roles would refuse to write (opsctl/configvalues.py) is refused here first."""
    problem = inventory_problem(host.vars)
    if problem:
        return HostPlan(host.name, facts if isinstance(facts, dict) else {}, error=f"{host.name}: {problem}",
                        refused=True)
    unusable = facts_problem(facts)
    if unusable:   # what the host printed is this host's failure; other hosts proceed
        return HostPlan(host.name, error=f"{host.name}: {unusable}")
    facts = dict(facts, host=host.name)
    try:
        plan = derive(host.vars.get("opsctl_event") or {}, facts,
                      host.vars.get("opsctl_capacity_overrides") or {},
                      host.flag("opsctl_capacity_force"))
    except CapacityError as exc:
        text = str(exc)
        if not host.vars.get("opsctl_event"):
            text = f"{host.name}: no opsctl_event declared for this host (see the README's event profile)"
        elif not text.startswith(f"{host.name}:"):
            text = f"{host.name}: {text}"
        return HostPlan(host.name, facts, error=text, refused=True)
    return HostPlan(host.name, facts, plan)


def plan_hosts(inv: Inventory) -> list[HostPlan]:
    """Every selected host's facts (over SSH, in parallel) and capacity plan.

    Not --explain's alone: every harden needs it first, as the gate that refuses a profile,
    override or value the model or the roles would refuse (exit 2) before any host changes;
    --explain prints it and stops."""
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import capacity_facts, parse
    from opsctl.sshexec import run_many, targets_for

    results = run_many(targets_for(inv.hosts, inv.ssh), probe_script("capacity"), "sh -s")
    plans = []
    for host, result in zip(inv.hosts, results):
        if not result.ok and inventory_problem(host.vars):
            plans.append(plan_host(host, {}))       # bad input even where the probe failed
            continue
        if not result.ok:
            plans.append(HostPlan(host.name, error=f"{host.name}: {result.error}"))
            continue
        try:
            facts = capacity_facts(parse(result.stdout), host.name)
        except (ValueError, RecursionError) as exc:   # not JSON, or nested deeper than json parses
            plans.append(HostPlan(host.name, error=f"{host.name}: the probe printed no facts: {str(exc)[:100]}"))
            continue
        plans.append(plan_host(host, facts))
    return plans


def refuse_bad_input(plans: list[HostPlan]) -> None:
    """A plan the model refuses stops the run before any host changes (exit 2)."""
    refused = [p for p in plans if p.refused]
    if refused:
        more = f" (and {len(refused) - 1} more host(s))" if len(refused) > 1 else ""
        raise OpsctlError(refused[0].error + more)


def check_tags(tags: str | None) -> str | None:
    if not tags:
        return None
    wanted = [t.strip() for t in tags.split(",") if t.strip()]
    unknown = [t for t in wanted if t not in TAGS]
    if unknown or not wanted:
        raise OpsctlError(f"--tags {tags!r}: unknown part {unknown[0] if unknown else ''!r}; "
                          f"choose from {', '.join(TAGS)}")
    return ",".join(wanted)


@dataclass
class HostRun:
    """One host during the run: what it is doing and what happened."""
    name: str
    task: str = "waiting"
    state: str = "waiting"    # waiting | running | done | failed | unreachable
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    message: str = ""         # the first failure's task and message
    pending_restart: bool = False


@dataclass
class DiffRecord:
    host: str
    task: str
    diff: dict


class Follower:
    """Runner events -> per-host progress, diffs and pending restarts; the live view reads it."""

    def __init__(self, hosts: list[str]) -> None:
        self.hosts = {name: HostRun(name) for name in hosts}
        self.started = time.monotonic()
        self.diffs: list[DiffRecord] = []

    def __call__(self, event: Event) -> None:
        if event.kind == "task_start":
            for run in self.hosts.values():
                if run.state in ("waiting", "running"):
                    run.state, run.task = "running", event.task
            return
        run = self.hosts.get(event.host)
        if run is None:
            return
        self._count(run, event)
        self.diffs.extend(DiffRecord(event.host, event.task, d) for d in event.diffs)

    def _count(self, run: HostRun, event: Event) -> None:
        if event.kind == "ok":
            run.ok += 1
            run.changed += event.changed
            if event.stats.get(PENDING_MARK):
                run.pending_restart = True
        elif event.kind in ("failed", "unreachable"):
            setattr(run, event.kind, getattr(run, event.kind) + 1)
            run.state = "failed" if event.kind == "failed" else "unreachable"
            run.message = run.message or f"{event.task}: {event.message}"

    def finish(self, result: RunResult) -> None:
        """The final stats are authoritative (rescued and ignored errors included)."""
        for name, run in self.hosts.items():
            if run.state in ("waiting", "running"):
                run.state = "done"
            for failure in result.failures:
                if failure.host == name and not run.message:
                    run.message = f"{failure.task}: {failure.message}"
                    run.state = "failed" if failure.kind == "failed" else "unreachable"
        stats = result.stats or {}
        for name, run in self.hosts.items():
            run.changed = stats.get("changed", {}).get(name, run.changed)
            run.ok = stats.get("ok", {}).get(name, run.ok)

    @property
    def pending(self) -> list[str]:
        return [r.name for r in self.hosts.values() if r.pending_restart]

    def converged(self, result: RunResult) -> bool:
        return result.rc == 0 and all(r.state == "done" for r in self.hosts.values())

    def failure_line(self, result: RunResult) -> str:
        for run in self.hosts.values():
            if run.state in ("failed", "unreachable"):
                return f"{run.name} {run.state} at {run.message}"
        return f"the playbook ended with status {result.status} (rc {result.rc})"


def run(inv: Inventory, *, tags: str | None, check: bool, diff: bool, verbose: int,
        on_event: Callable[[Event], None], playbook: str = PLAYBOOK,
        vault: VaultOptions = VaultOptions()) -> RunResult:
    hosts = [h.name for h in inv.hosts]
    return run_playbook(playbook, inv.source, limit=",".join(hosts), verbosity=verbose, on_event=on_event,
                        host_count=len(hosts), tags=tags, check=check, diff=diff, vault=vault,
                        host_vars={h.name: h.vars for h in inv.hosts})


def restart_command(inventory: str, hosts: list[str]) -> str:
    return f"opsctl reload php-fpm --rolling --restart --inventory {inventory} --limit {','.join(hosts)}"
