#!/usr/bin/env python3
"""Where a playbook run's time went, from its ansible-runner artifacts: seconds per role, per
module and per task (wall time between task starts), and how many tasks ran a module on a host.

Usage: bench/harden_profile.py [ARTIFACT_DIR]   (default: the newest harden run in /var/lib/opsctl/runs)
"""

from __future__ import annotations

import collections
import datetime
import json
import sys
from pathlib import Path

RUNS = Path("/var/lib/opsctl/runs")
CONTROLLER_ONLY = {"set_fact", "assert", "debug", "fail", "include_tasks", "include_role", "import_tasks",
                   "include_vars", "meta", "set_stats", "validate_argument_spec"}


def newest() -> Path:
    runs = sorted(RUNS.glob("*-harden"))
    return next(iter(sorted((runs[-1] / "artifacts").iterdir())))


def main() -> int:
    art = Path(sys.argv[1]) if len(sys.argv) > 1 else newest()
    events = sorted((json.loads(p.read_text()) for p in (art / "job_events").glob("*.json")),
                    key=lambda e: e["counter"])
    starts = [e for e in events if e["event"] == "playbook_on_task_start"]
    when = lambda e: datetime.datetime.fromisoformat(e["created"])  # noqa: E731
    ran = collections.Counter(e["event_data"].get("task_uuid") for e in events
                              if e["event"] in ("runner_on_ok", "runner_on_failed"))
    rows = []
    for task, following in zip(starts, starts[1:] + [events[-1]]):
        data = task["event_data"]
        action = (data.get("resolved_action") or data.get("task_action") or "").rsplit(".", 1)[-1]
        rows.append(((when(following) - when(task)).total_seconds(), data.get("role", ""), action,
                     data["task"], ran[data.get("task_uuid")]))
    by_role, by_action, runs = collections.Counter(), collections.Counter(), collections.Counter()
    for seconds, role, action, _, hosts in rows:
        by_role[role or "(play)"] += seconds
        by_action[action] += seconds
        runs[role or "(play)"] += 0 if action in CONTROLLER_ONLY else hosts
    module_runs = sum(n for _, _, action, _, n in rows if action not in CONTROLLER_ONLY)
    print(f"{art}\ntasks {len(rows)}, {sum(r[0] for r in rows):.1f} s, module runs (all hosts) {module_runs}")
    print("\nper role (seconds, module runs on all hosts):")
    for name, seconds in by_role.most_common():
        print(f"  {seconds:6.2f} s  {runs[name]:4}  {name}")
    print("\nper module:")
    for name, seconds in by_action.most_common():
        print(f"  {seconds:6.2f} s  {name}")
    print("\nslowest tasks:")
    for seconds, role, action, name, n in sorted(rows, reverse=True)[:25]:
        print(f"  {seconds:5.2f} s  {role[:20]:20} {action[:14]:14} ran on {n:3}  {name[:70]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
