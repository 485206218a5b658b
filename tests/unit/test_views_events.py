"""The views read data the playbooks record (set_stats), not task titles: harden.yml's own
pending-restart post_tasks, renamed and run by real Ansible, still mark the right host."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from opsctl import paths
from opsctl.harden import Follower as HardenFollower
from opsctl.rolling import STEPS, Follower as RollingFollower, RolloutPlan
from opsctl.runner import Event, to_event


def _harden_post_tasks_renamed() -> list[dict]:
    plays = yaml.safe_load((paths.playbooks_dir() / "harden.yml").read_text())
    tasks = plays[0]["post_tasks"]
    for number, task in enumerate(tasks):
        task["name"] = f"Renamed post task {number}"
    return tasks


def _run_events(tmp_path: Path, play: dict, inventory: str) -> tuple[list[Event], str]:
    """Run PLAY with real ansible-playbook (through ansible-runner, as opsctl does) on local hosts."""
    import ansible_runner

    raw: list[dict] = []
    result = ansible_runner.run(
        private_data_dir=str(tmp_path), playbook=[play], inventory=inventory, quiet=True,
        event_handler=lambda event: raw.append(event) or True,
        envvars={"ANSIBLE_PYTHON_INTERPRETER": sys.executable, "PATH": str(Path(sys.executable).parent)})
    assert result.rc == 0, result.stdout.read()
    return [e for e in map(to_event, raw) if e is not None], result.stdout.read()


def test_pending_restart_is_read_from_data_whatever_the_task_is_called(tmp_path):
    inventory = ("web1 ansible_connection=local opsctl_php_fpm_pending_restart=true\n"
                 "lb1 ansible_connection=local\n")
    play = {"name": "post tasks of harden.yml", "hosts": "all", "gather_facts": False,
            "tasks": _harden_post_tasks_renamed()}
    events, stdout = _run_events(tmp_path, play, inventory)
    follower = HardenFollower(["web1", "lb1"])
    for event in events:
        follower(event)
    assert follower.pending == ["web1"]
    # The message for people running ansible-playbook on its own stays, for that host only.
    assert stdout.count("pending restart: php-fpm keeps its listening socket") == 1


def _marker(host: str, step: str, task: str = "any title") -> Event:
    return to_event({"event": "runner_on_ok", "event_data": {
        "host": host, "task": task,
        "res": {"changed": False, "ansible_stats": {"data": {"opsctl_step": step}, "per_host": True,
                                                    "aggregate": False}}}})


def test_rolling_follower_moves_on_step_markers_not_titles():
    plan = RolloutPlan(service="php-fpm", mode="reload", batches=[["web1"], ["web2"]], skipped=[], balancers=[])
    follower = RollingFollower(plan)
    for step in STEPS:
        follower(Event("task_start", task=f"Step {STEPS[-1]}: a misleading title"))
        follower(_marker("web1", step))
        assert follower.hosts["web1"].step == step and follower.hosts["web1"].state == "running"
    follower(_marker("web1", "done"))
    follower(_marker("web2", "test"))
    follower(_marker("web2", "drain"))
    follower(Event("failed", task="renamed", host="web2", message="drain timed out"))
    assert follower.hosts["web1"].state == "done" and set(follower.hosts["web1"].step_seconds()) == set(STEPS)
    web2 = follower.hosts["web2"]
    assert (web2.state, web2.step, web2.message, web2.drained) == ("failed", "drain", "drain timed out", True)


def test_only_per_host_stats_reach_the_event():
    shared = to_event({"event": "runner_on_ok", "event_data": {"host": "web1", "res": {
        "ansible_stats": {"data": {"opsctl_step": "drain"}, "per_host": False, "aggregate": True}}}})
    assert shared.stats == {} and _marker("web1", "drain").stats == {"opsctl_step": "drain"}
