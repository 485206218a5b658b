"""`opsctl harden` logic that needs no host: planning, bad input, following runner events."""

from pathlib import Path

import pytest

from opsctl.errors import OpsctlError
from opsctl.harden import PENDING_MARK, DiffRecord, Follower, check_tags, plan_host, refuse_bad_input
from opsctl.harden_view import _diff_text
from opsctl.inventory import Host
from opsctl.runner import Event, Failure, RunResult, to_event

EVENT = {"peak_qps": 100, "request_time": {"typical_ms": 100, "p99_ms": 300}, "client_timeout_s": 5,
         "php_worker_memory_mb": 32}
FACTS = {"cpus": 2, "memory_mb": 4096, "php_version": "8.2", "nginx": True}


def host(name: str = "web1", **extra) -> Host:
    return Host(name=name, address="10.0.0.1", port=22, user="root", groups=("web",),
                vars={"opsctl_event": EVENT, **extra})


def test_plan_host_derives_with_the_inventory_overrides():
    plan = plan_host(host(opsctl_capacity_overrides={"php_fpm.listen_backlog": 50}), FACTS)
    assert not plan.error and plan.plan["php_fpm.listen_backlog"]["value"] == 50
    assert plan.facts["host"] == "web1"


def test_refused_override_is_bad_input_naming_host_and_key():
    plans = [plan_host(host("web1"), FACTS),
             plan_host(host("web2", opsctl_capacity_overrides={"php_fpm.listen_backlog": 100000}), FACTS)]
    with pytest.raises(OpsctlError) as caught:
        refuse_bad_input(plans)
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("web2: override php_fpm.listen_backlog=100000 refused")


def test_force_from_inventory_text_is_honoured():
    plan = plan_host(host(opsctl_capacity_overrides={"php_fpm.listen_backlog": 100000},
                          opsctl_capacity_force="yes"), FACTS)
    assert not plan.error and "FORCED" in plan.plan["php_fpm.listen_backlog"]["reason"]


def test_host_without_event_profile_is_refused_clearly():
    bare = Host(name="db1", address="x", port=22, user="root", groups=(), vars={})
    plan = plan_host(bare, FACTS)
    assert plan.refused and plan.error == "db1: no opsctl_event declared for this host (see the README's event profile)"


def test_unreachable_host_is_not_bad_input():
    from opsctl.harden import HostPlan

    refuse_bad_input([HostPlan("web1", error="web1: unreachable")])


@pytest.mark.parametrize("given, expected", [(None, None), ("sysctl, limits", "sysctl,limits"), ("nginx", "nginx")])
def test_tags_are_checked(given, expected):
    assert check_tags(given) == expected


def test_unknown_tag_is_bad_input():
    with pytest.raises(OpsctlError, match="unknown part 'sysctls'"):
        check_tags("sysctl,sysctls")


def result(rc=0, failures=(), changed=None) -> RunResult:
    return RunResult(rc=rc, status="successful" if rc == 0 else "failed", artifact_dir=Path("/tmp/x"),
                     stats={"changed": changed or {}, "ok": {}}, failures=list(failures))


def test_follower_tracks_tasks_counts_and_pending_restarts():
    follow = Follower(["web1", "lb1"])
    follow(Event("task_start", task="Write the sysctl drop-in"))
    assert follow.hosts["web1"].task == "Write the sysctl drop-in" and follow.hosts["web1"].state == "running"
    follow(Event("ok", task="Write the sysctl drop-in", host="web1", changed=True,
                 diffs=({"before": "a\n", "after": "b\n"},)))
    follow(Event("ok", task="Mark this host as pending a drained restart", host="web1",
                 stats={PENDING_MARK: True}))
    follow(Event("skipped", task="Mark this host as pending a drained restart", host="lb1"))
    follow.finish(result(changed={"web1": 1}))
    assert follow.pending == ["web1"]
    assert follow.hosts["web1"].changed == 1 and follow.hosts["lb1"].changed == 0
    assert follow.converged(result())
    assert [d.host for d in follow.diffs] == ["web1"]


def test_follower_names_the_failed_host_and_task():
    follow = Follower(["web1", "web2"])
    follow(Event("task_start", task="Test the live nginx configuration"))
    follow(Event("failed", task="Test the live nginx configuration", host="web2", message="nginx: [emerg] bad"))
    failed = result(rc=2, failures=[Failure("web2", "Test the live nginx configuration", "failed", "nginx: [emerg] bad")])
    follow.finish(failed)
    assert not follow.converged(failed)
    assert follow.failure_line(failed) == "web2 failed at Test the live nginx configuration: nginx: [emerg] bad"


def test_unreachable_host_does_not_converge():
    follow = Follower(["web1"])
    follow(Event("unreachable", task="Gathering Facts", host="web1", message="ssh: connect refused"))
    follow.finish(result(rc=4))
    assert follow.hosts["web1"].state == "unreachable" and not follow.converged(result(rc=4))


def test_runner_keeps_diffs_of_changed_results_and_loop_items():
    raw = {"event": "runner_on_ok", "event_data": {"host": "web1", "task": "t", "res": {
        "changed": True, "results": [
            {"changed": True, "diff": [{"before": "x", "after": "y", "before_header": "f"}]},
            {"changed": False, "diff": [{"before": "same", "after": "same"}]}]}}}
    event = to_event(raw)
    assert event.diffs == ({"before": "x", "after": "y", "before_header": "f"},)


def test_diff_is_rendered_as_a_unified_diff():
    lines = _diff_text(DiffRecord("web1", "t", {"before": "a = 1\nb = 2\n", "after": "a = 1\nb = 3\n",
                                                  "before_header": "/etc/x", "after_header": "/etc/x"}))
    assert "-b = 2" in lines and "+b = 3" in lines and lines[0] == "--- /etc/x"
