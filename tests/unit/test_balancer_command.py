"""The command balancer: the entry rule both sides apply, and the drain role's command driver
under plain ansible-playbook on the controller (localhost): the user's commands get the backend
in their environment, a failing or hung command stops with one line naming the step, and the
sessions wait polls until the balancer reports 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.opsctl.fleet.plugins.plugin_utils.balancer_entries import balancers_problem, entry_problem
from tests.conftest import REPO

GOOD = {"host": "localhost", "type": "command", "upstream": "pool-1", "disable": "true", "enable": "true"}


@pytest.mark.parametrize("entry, message", [
    ({**GOOD, "disable": ""}, "w: 'disable' must be a non-empty string for a command balancer"),
    ({k: v for k, v in GOOD.items() if k != "enable"}, "w: 'enable' must be a non-empty string for a command balancer"),
    ({**GOOD, "timeout": 0}, "w.timeout: expected whole seconds from 1 to 3600, got 0"),
    ({**GOOD, "timeout": "5"}, "w.timeout: expected whole seconds from 1 to 3600, got '5'"),
    ({**GOOD, "timeout": True}, "w.timeout: expected whole seconds from 1 to 3600, got True"),
    ({**GOOD, "peers": "10.0.0.1"}, "w.peers: expected a list of the addresses the balancer connects from"),
    ({**GOOD, "peers": ["10.0.0.1; rm -rf /"]}, "w.peers: expected a list of the addresses"),
    ({**GOOD, "config": "/etc/nginx/x.conf"}, "w: unknown key 'config' (allowed: host, type, upstream, disable, enable"),
    ({"host": "lb1", "type": "nginx", "upstream": "u", "disable": "x"}, "w: unknown key 'disable' (allowed: host, type, upstream, config)"),
    ({**GOOD, "sessions": "echo 0\x00"}, "w: 'sessions' holds a NUL byte"),
])
def test_a_malformed_command_balancer_is_one_line_naming_the_key(entry, message):
    assert entry_problem(entry, "w").startswith(message)


def test_well_formed_entries_pass():
    assert entry_problem({**GOOD, "sessions": "echo 0", "timeout": 5, "peers": ["10.1.2.3", "[fd00::1]", "100.64.0.0/10"]}, "w") == ""
    assert balancers_problem([GOOD, {"host": "lb1", "type": "nginx", "upstream": "u", "config": "/etc/n.conf"}], "w") == ""
    assert balancers_problem(None, "w") == "" and balancers_problem([], "w") == ""


def drain(tmp_path: Path, state: str, balancer: dict, **extra) -> subprocess.CompletedProcess:
    """The drain role under plain ansible-playbook, this machine as the backend and the balancer."""
    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "name": "Drain", "ansible.builtin.include_role": {"name": "opsctl.fleet.opsctl_drain"},
        "vars": {"opsctl_drain_state": state, "opsctl_drain_balancers": [balancer], "opsctl_drain_timeout": 3,
                 "opsctl_drain_backend_port": 8, **extra}}]}]))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    return subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(play)],
                          capture_output=True, text=True, timeout=120, env=env, stdin=subprocess.DEVNULL)


def test_disable_gets_the_backend_in_its_environment_and_the_sessions_wait_polls_to_zero(tmp_path):
    seen, count = tmp_path / "seen", tmp_path / "count"
    count.write_text("2")
    # The balancer still has 2 sessions, then 1, then none: the sessions command counts down.
    sessions = f'n=$(cat {count}); echo $n; [ $n -gt 0 ] && echo $((n - 1)) > {count}; true'
    balancer = {**GOOD, "peers": [], "sessions": sessions,
                "disable": f'echo "$OPSCTL_HOST $OPSCTL_ADDRESS $OPSCTL_PORT $OPSCTL_UPSTREAM $OPSCTL_STATE" > {seen}'}
    proc = drain(tmp_path, "drained", balancer, opsctl_drain_backend_address="10.9.8.7")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert seen.read_text().split() == ["localhost", "10.9.8.7", "8", "pool-1", "drained"]
    assert count.read_text().strip() == "0"     # polled until the balancer said 0


@pytest.mark.parametrize("step, balancer, message", [
    ("drained", {**GOOD, "disable": "echo working; sleep 30", "timeout": 2}, "balancer localhost: disable command hung: stopped after 2 s"),
    ("serving", {**GOOD, "enable": "echo 'InvalidBackendServer: i-123' >&2; exit 7"},
     "balancer localhost: enable command failed (exit 7): InvalidBackendServer: i-123"),
    ("drained", {**GOOD, "peers": [], "sessions": "echo 4"}, "balancer localhost: sessions command 4 sessions still open after 3 s"),
    ("drained", {**GOOD, "peers": [], "sessions": "echo many"}, "balancer localhost: sessions command printed 'many', not a number"),
])
def test_a_failing_or_hung_command_stops_with_one_line_naming_the_step(tmp_path, step, balancer, message):
    started = time.monotonic()
    proc = drain(tmp_path, step, balancer)
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert time.monotonic() - started < 60
