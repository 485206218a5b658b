"""`opsctl reload --rolling`: plan the batches, run opsctl.fleet.rolling_reload, follow each
host through its steps, and say exactly where a failed rollout stopped and how to resume."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from opsctl.errors import OpsctlError
from opsctl.inventory import Host, Inventory
from opsctl.runner import Event, RunResult, run_playbook
from opsctl.vault import VaultOptions

STEPS = ("test", "drain", "reload", "smoke", "enable")
# The set_stats data rolling_reload.yml records per host as each step begins, and once more
# (DONE_MARK) when the host is back in rotation.
STEP_MARK, DONE_MARK = "opsctl_step", "done"
DEFAULT_TARGETS = "web"


@dataclass(frozen=True)
class RolloutPlan:
    service: str
    mode: str               # reload | restart
    batches: list[list[str]]
    skipped: list[str]      # before --resume-from
    balancers: list[str]
    host_vars: dict[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)  # for the host key guard


@dataclass
class HostProgress:
    name: str
    step: str = "waiting"
    state: str = "waiting"  # waiting, running, done, failed
    started: float | None = None
    finished: float | None = None
    step_started: dict[str, float] = field(default_factory=dict)
    message: str = ""

    @property
    def seconds(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.monotonic()) - self.started

    def step_seconds(self) -> dict[str, float]:
        """Time spent in each step, from the moment it started to the next step's start."""
        marks = sorted(self.step_started.items(), key=lambda kv: kv[1])
        ends = [t for _, t in marks[1:]] + [self.finished or time.monotonic()]
        return {step: end - start for (step, start), end in zip(marks, ends)}

    @property
    def drained(self) -> bool:
        """Left out of rotation: it failed after the drain began and before it was re-enabled."""
        return self.state == "failed" and self.step in ("drain", "reload", "smoke", "enable")


def batch_size(spec: str, count: int) -> int:
    """'1', '3' or '25%' of `count` hosts (at least one)."""
    text = spec.strip()
    match = re.fullmatch(r"(\d{1,6})(%?)", text) or re.fullmatch(r"(\d{1,3}\.\d{1,3})(%)", text)
    if not match:
        raise OpsctlError(f"--batch {spec!r}: give a host count (2) or a percentage (25%)")
    number, percent = float(match[1]), bool(match[2])
    if number <= 0 or (percent and number > 100):
        raise OpsctlError(f"--batch {spec!r}: must be at least one host and at most 100%")
    size = math.ceil(count * number / 100) if percent else int(number)
    return max(1, min(size, count))


def plan_rollout(inv: Inventory, service: str, mode: str, batch: str, resume_from: str | None) -> RolloutPlan:
    hosts = [h for h in inv.hosts if DEFAULT_TARGETS in h.groups or h.vars.get("opsctl_balancers")]
    if not hosts:
        raise OpsctlError(f"no host to reload: none in group '{DEFAULT_TARGETS}' or with opsctl_balancers "
                          f"among the selected hosts of {inv.source}")
    names = [h.name for h in hosts]
    skipped: list[str] = []
    if resume_from:
        if resume_from not in names:
            raise OpsctlError(f"--resume-from {resume_from!r} is not among the hosts to reload: {', '.join(names)}")
        skipped, names = names[:names.index(resume_from)], names[names.index(resume_from):]
    size = batch_size(batch, len(names))
    batches = [names[i:i + size] for i in range(0, len(names), size)]
    return RolloutPlan(service=service, mode=mode, batches=batches, skipped=skipped,
                       balancers=_balancers(hosts), host_vars={h.name: h.vars for h in inv.hosts})


def _balancers(hosts: list[Host]) -> list[str]:
    found = []
    for host in hosts:
        for balancer in host.vars.get("opsctl_balancers") or []:
            label = f"{balancer.get('host')} ({balancer.get('type')}, upstream {balancer.get('upstream')})"
            if label not in found:
                found.append(label)
    return found


class Follower:
    """Turns runner events into per-host progress; the live view reads it.

    Each step of rolling_reload.yml begins with a per-host set_stats marker (opsctl_step: test,
    drain, ..., then done): the data, not a task's title, says where a host is."""

    def __init__(self, plan: RolloutPlan) -> None:
        self.hosts = {name: HostProgress(name) for batch in plan.batches for name in batch}
        self.started = time.monotonic()

    def __call__(self, event: Event) -> None:
        progress = self.hosts.get(event.host)
        if progress is None or progress.state in ("done", "failed"):
            return
        step = event.stats.get(STEP_MARK) if event.kind == "ok" else None
        if step == DONE_MARK:
            progress.state, progress.finished = "done", time.monotonic()
        elif step in STEPS:
            self._enter(progress, step)
        elif event.kind in ("failed", "unreachable"):
            progress.state, progress.finished = "failed", time.monotonic()
            progress.message = f"{event.kind}: {event.message}" if event.kind == "unreachable" else event.message

    @staticmethod
    def _enter(progress: HostProgress, step: str) -> None:
        now = time.monotonic()
        if progress.started is None:
            progress.started, progress.state = now, "running"
        progress.step = step
        progress.step_started[step] = now

    def _finish_running(self) -> None:
        """A run that ended well got every host it started through all steps."""
        now = time.monotonic()
        for progress in self.hosts.values():
            if progress.state == "running":
                progress.state, progress.finished = "done", now

    def finish(self, result: RunResult) -> None:
        if result.rc == 0:
            self._finish_running()
        for failure in result.failures:
            progress = self.hosts.get(failure.host)
            if progress is not None and progress.state != "failed":
                progress.state, progress.finished, progress.message = "failed", time.monotonic(), failure.message

    @property
    def failed(self) -> list[HostProgress]:
        return [p for p in self.hosts.values() if p.state == "failed"]

    def failure_line(self, service: str, inventory: str, result: RunResult) -> str:
        """Where a stopped rollout stands and how to resume it, in one line."""
        failed = self.failed
        if not failed:
            return f"opsctl: rollout failed: {result.failures[0].line() if result.failures else (result.reason or result.status)}"
        first = failed[0]
        untouched = [p.name for p in self.hosts.values() if p.state == "waiting"]
        where = (f"{first.name} is left drained (out of rotation); fix it, then" if any(p.drained for p in failed)
                 else f"{first.name} was not taken out of rotation;")
        return (f"opsctl: rollout stopped: {first.name} failed at step {first.step}: {first.message}. "
                f"{where} resume with: opsctl reload {service} --rolling --inventory {inventory} "
                f"--resume-from {first.name}" + (f" (untouched: {', '.join(untouched)})" if untouched else ""))


def run_rollout(plan: RolloutPlan, inventory_source, verbose: int,
                on_event: Callable[[Event], None], vault: VaultOptions = VaultOptions()) -> RunResult:
    hosts = [name for batch in plan.batches for name in batch]
    return run_playbook(
        "rolling_reload", inventory_source, limit=",".join(hosts), verbosity=verbose,
        extravars={"opsctl_rolling_hosts": "all", "opsctl_rolling_batch": len(plan.batches[0]),
                   "opsctl_rolling_service": plan.service, "opsctl_rolling_mode": plan.mode},
        on_event=on_event, host_count=len(plan.batches[0]), vault=vault, host_vars=plan.host_vars)
