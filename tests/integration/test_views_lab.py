"""The live views follow data the playbooks hand over, not task titles: a copy of the collection
whose rolling_reload.yml has every task renamed still shows each host through every step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from opsctl import paths
from opsctl.inventory import load_inventory
from opsctl.rolling import STEPS, Follower, plan_rollout, run_rollout
from opsctl.runner import Event
from tests.labtools import playbook, recap

pytestmark = pytest.mark.lab


def renamed_collection(root: Path) -> Path:
    """A copy of opsctl.fleet under ROOT whose rolling reload tasks all have new titles."""
    copy = root / "ansible_collections" / "opsctl" / "fleet"
    shutil.copytree(paths.collection_dir(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    book = copy / "playbooks" / "rolling_reload.yml"
    plays = yaml.safe_load(book.read_text())
    for play in plays:
        for number, task in enumerate(play["tasks"]):
            task["name"] = f"Renamed task {number}"
    book.write_text("---\n" + yaml.safe_dump(plays, sort_keys=False))
    return copy


def test_rolling_view_survives_renamed_tasks(lab, tmp_path, monkeypatch):
    copy = renamed_collection(tmp_path)
    # For this test only: opsctl runs the renamed copy's playbooks and roles.
    monkeypatch.setattr(paths, "collection_dir", lambda: copy)
    monkeypatch.setattr(paths, "collections_root", lambda: tmp_path)
    inv = load_inventory(lab.name)
    plan = plan_rollout(inv, "php-fpm", "reload", "1", None)
    follower = Follower(plan)
    seen: dict[str, list[str]] = {name: [] for name in follower.hosts}
    titles: set[str] = set()

    def watch(event: Event) -> None:
        titles.add(event.task)
        follower(event)
        for name, progress in follower.hosts.items():
            if progress.step in STEPS and progress.step not in seen[name]:
                seen[name].append(progress.step)

    result = run_rollout(plan, inv.source, 0, on_event=watch)
    follower.finish(result)
    assert result.rc == 0, (result.failures, result.reason)
    assert "Renamed task 0" in titles and not any(t.startswith("Step ") for t in titles)   # the copy ran
    webs = [h.name for h in lab.by_role("web")]
    assert sorted(follower.hosts) == sorted(webs)
    for name in webs:
        progress = follower.hosts[name]
        assert seen[name] == list(STEPS), (name, seen[name])
        assert progress.state == "done" and set(progress.step_seconds()) == set(STEPS), progress


def test_standalone_rolling_reload_prints_no_marker_data(lab):
    """The markers are for opsctl: ansible-playbook on its own (AWX) runs them quietly."""
    proc = playbook(lab, "opsctl.fleet.rolling_reload")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert "opsctl_step" not in proc.stdout and "CUSTOM STATS" not in proc.stdout
    counts = recap(proc.stdout)
    assert all(counts[h.name]["failed"] == 0 for h in lab.by_role("web")), counts
