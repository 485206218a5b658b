"""The capacity model: every key, its arithmetic, its invariants and how overrides are judged."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import KEYS, CapacityError, derive, violations, parse_inputs
from ansible_collections.opsctl.fleet.plugins.filter.capacity import FilterModule


REPO = Path(__file__).resolve().parents[2]
LAB = {"peak_qps": 100, "concurrency": 400, "request_time": {"typical_ms": 100, "p99_ms": 300},
       "client_timeout_s": 5, "php_worker_memory_mb": 32}
SHOP = {"peak_qps": 640, "concurrency": 4000, "request_time": {"typical_ms": 80, "p99_ms": 400},
        "client_timeout_s": 10, "php_worker_memory_mb": 48}
BIG = {"cpus": 8, "memory_mb": 32000, "php_version": "8.2", "host": "web-01"}
SMALL = {"cpus": 2, "memory_mb": 2048, "php_version": "8.2", "host": "web-02"}


def values(event=LAB, facts=BIG, overrides=None, force=False) -> dict:
    return {k: v["value"] for k, v in derive(event, facts, overrides, force).items()}


def with_(base: dict, **changes) -> dict:
    out = dict(base)
    out.update(changes)
    return out


def test_every_contract_key_has_a_typed_value_and_a_one_line_reason():
    plan = derive(SHOP, BIG)
    assert sorted(plan) == sorted(KEYS)
    for key, decision in plan.items():
        assert set(decision) == {"value", "reason"}
        assert decision["reason"] and "\n" not in decision["reason"], key
        if key == "php_fpm.pm":
            assert decision["value"] in ("static", "dynamic")
        elif key == "nginx.worker_processes":
            assert decision["value"] == "auto" or isinstance(decision["value"], int)
        else:
            assert type(decision["value"]) is int, key


def test_timeouts_sit_between_p99_and_the_client_timeout():
    v = values(SHOP)
    assert 0.4 < v["nginx.upstream_read_timeout"] < 10
    assert v["nginx.upstream_read_timeout"] == 2          # max(2 x 0.4, 0.4 + 1) rounded up
    assert v["nginx.upstream_send_timeout"] == v["nginx.upstream_read_timeout"]
    assert v["nginx.upstream_connect_timeout"] < 10
    assert v["php_fpm.request_terminate_timeout"] == v["nginx.upstream_read_timeout"]
    assert v["php_fpm.process_control_timeout"] == 10
    assert v["php_fpm.request_slowlog_timeout"] < v["php_fpm.request_terminate_timeout"]


def test_read_timeout_is_capped_below_the_client_timeout():
    ev = with_(SHOP, request_time={"typical_ms": 1000, "p99_ms": 2500}, client_timeout_s=4.5)
    v = values(ev)
    assert v["nginx.upstream_read_timeout"] == 4        # wanted 5, must stay below 4.5
    assert v["php_fpm.process_control_timeout"] == 5    # ceil(4.5)


# --- timeouts finer than a second (upstream_timeouts.py) ---------------------------------------

def _old_whole_second_rule(p99_s: float, client_s: float) -> dict:
    """The model's timeouts before milliseconds, for profiles that fit in whole seconds."""
    read = min(math.ceil(max(2 * p99_s, p99_s + 1)), math.ceil(client_s) - 1)
    return {"nginx.upstream_read_timeout": read, "nginx.upstream_send_timeout": read,
            "nginx.upstream_connect_timeout": min(2, read), "php_fpm.request_terminate_timeout": read,
            "php_fpm.process_control_timeout": math.ceil(client_s),
            "php_fpm.request_slowlog_timeout": max(1, min(math.ceil(p99_s), read - 1)),
            "nginx.upstream_fail_timeout": max(10, 2 * read)}


def test_whole_second_profiles_keep_their_plans():
    checked = 0
    for client in (2, 3, 5, 10, 30, 60, 4.5):
        for p99 in (10, 50, 300, 400, 900, 1500, 2500, 3400, 8000, 29000):
            old = _old_whole_second_rule(p99 / 1000, client)
            if old["nginx.upstream_read_timeout"] * 1000 < p99 + 100:
                continue   # no whole second leaves p99 a queue wait: milliseconds below
            new = values(with_(SHOP, request_time={"typical_ms": min(80, p99), "p99_ms": p99},
                               client_timeout_s=client))
            assert {k: new[k] for k in old} == old, (client, p99)
            assert all(type(new[k]) is int for k in old), (client, p99)
            checked += 1
    assert checked > 40


def test_a_one_second_client_is_sized_in_milliseconds():
    plan = derive(with_(LAB, client_timeout_s=1), BIG)
    v = {k: d["value"] for k, d in plan.items()}
    # 1 s - connect 100 ms - 100 ms for the 504 to reach the client; above p99 300 ms + 100 ms
    assert v["nginx.upstream_read_timeout"] == v["nginx.upstream_send_timeout"] == 0.8
    assert v["nginx.upstream_connect_timeout"] == 0.1
    assert "no whole second fits" in plan["nginx.upstream_read_timeout"]["reason"]
    # php-fpm counts whole seconds: nginx gives up at 800 ms (504), php-fpm kills the worker at 1 s
    assert v["php_fpm.request_terminate_timeout"] == v["php_fpm.process_control_timeout"] == 1
    assert "rounded up to whole seconds" in plan["php_fpm.request_terminate_timeout"]["reason"]
    assert v["php_fpm.request_slowlog_timeout"] == 1
    assert v["nginx.upstream_fail_timeout"] == 10
    # Little's law on the 500 ms between p99 and the read timeout, counted in milliseconds
    assert v["php_fpm.listen_backlog"] == 50 and v["nginx.limit_conn"] == v["php_fpm.pm_max_children"] + 50


def test_milliseconds_where_no_whole_second_leaves_p99_a_queue_wait():
    v = values(with_(SHOP, request_time={"typical_ms": 100, "p99_ms": 1500}, client_timeout_s=2))
    # whole seconds: 1 s is below p99; milliseconds: 2 s - 200 ms
    assert v["nginx.upstream_read_timeout"] == 1.8 and v["nginx.upstream_connect_timeout"] == 0.1
    assert v["php_fpm.request_terminate_timeout"] == v["php_fpm.process_control_timeout"] == 2
    assert v["php_fpm.request_slowlog_timeout"] == 1
    # a read timeout 50 ms above p99 left no queue: milliseconds give it 800 ms
    v = values(with_(SHOP, request_time={"typical_ms": 100, "p99_ms": 3950}, client_timeout_s=5))
    assert v["nginx.upstream_read_timeout"] == 4.8 and v["php_fpm.request_terminate_timeout"] == 5


@pytest.mark.parametrize("client, p99, words", [
    (0.3, 50, "opsctl_event.client_timeout_s: 0.3 s is too short for p99 50 ms: it must hold connect 100 ms + "
              "p99 50 ms + 100 ms queue wait + 100 ms for nginx's 504 to reach the client = 350 ms"),
    (0.3, 10, "= 310 ms"),
    (1, 750, "raise it to 1.05 or lower p99_ms"),
    (1.0004, 50, "opsctl_event.client_timeout_s: 1.0004 has more than three decimals"),
])
def test_a_client_timeout_too_short_to_hold_the_request_is_refused_with_the_figures(client, p99, words):
    event = with_(LAB, client_timeout_s=client, request_time={"typical_ms": min(50, p99), "p99_ms": p99})
    with pytest.raises(CapacityError) as caught:
        derive(event, BIG)
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_the_shortest_accepted_client_timeout_is_p99_plus_300_ms():
    v = values(with_(LAB, client_timeout_s=0.35, request_time={"typical_ms": 20, "p99_ms": 50}))
    assert v["nginx.upstream_read_timeout"] == 0.15 and v["nginx.upstream_connect_timeout"] == 0.1
    assert v["php_fpm.request_terminate_timeout"] == 1


@pytest.mark.parametrize("event, given, value, terminate", [
    (with_(LAB, client_timeout_s=1), 0.5, 0.5, 1), (with_(LAB, client_timeout_s=1), "0.5", 0.5, 1),
    (SHOP, "3", 3, 3), (SHOP, 3.0, 3, 3), (SHOP, 2.5, 2.5, 3),
])
def test_timeout_overrides_take_seconds_to_the_millisecond(event, given, value, terminate):
    plan = derive(event, BIG, {"nginx.upstream_read_timeout": given})
    assert plan["nginx.upstream_read_timeout"]["value"] == value
    assert type(plan["nginx.upstream_read_timeout"]["value"]) is type(value)
    assert plan["php_fpm.request_terminate_timeout"]["value"] == terminate


def test_timeout_overrides_finer_than_a_millisecond_are_refused():
    with pytest.raises(CapacityError, match="to the millisecond"):
        derive(SHOP, BIG, {"nginx.upstream_read_timeout": 0.0005})


def test_php_backlog_is_littles_law_with_its_arithmetic_in_the_reason():
    plan = derive(LAB, BIG)
    # read 2 s - p99 0.3 s = 1.7 s room, capped at 1 s acceptable wait: 100 qps x 1 s
    assert plan["php_fpm.listen_backlog"]["value"] == 100
    assert "100 qps x 1 s acceptable queue wait" in plan["php_fpm.listen_backlog"]["reason"]


def test_php_backlog_never_exceeds_what_the_pool_drains_in_the_wait():
    # 4 GB host: memory carries few workers, so the queue is bounded by their drain rate.
    facts = with_(SMALL, memory_mb=1200)
    v = values(SHOP, facts)
    children = v["php_fpm.pm_max_children"]
    drain = math.ceil(children / 0.08 * 1.0)
    assert v["php_fpm.listen_backlog"] == min(640, drain)
    assert v["php_fpm.listen_backlog"] <= v["sysctl.net.core.somaxconn"]


def test_every_backlog_fits_under_somaxconn_even_at_huge_rates():
    ev = with_(SHOP, peak_qps=200_000, concurrency=None)
    v = values(ev, with_(BIG, memory_mb=10_000_000))
    for key in ("php_fpm.listen_backlog", "nginx.listen_backlog"):
        assert v[key] <= v["sysctl.net.core.somaxconn"] <= 65535
    assert v["sysctl.net.ipv4.tcp_max_syn_backlog"] >= v["sysctl.net.core.somaxconn"]


def test_max_children_follows_littles_law_when_memory_allows():
    plan = derive(SHOP, BIG)
    assert plan["php_fpm.pm_max_children"]["value"] == 256   # 640 qps x 0.4 s
    assert "CANNOT" not in plan["php_fpm.pm_max_children"]["reason"]


def test_max_children_is_bounded_by_memory_and_says_the_peak_cannot_be_carried():
    plan = derive(SHOP, SMALL)
    # 2048 MB - max(512, 15%) - 2 x 64 MB nginx = 1408 MB / 48 MB = 29 workers
    assert plan["php_fpm.pm_max_children"]["value"] == 29
    reason = plan["php_fpm.pm_max_children"]["reason"]
    assert "CANNOT carry" in reason and "needs 256" in reason and "72.5 qps" in reason


def test_static_pool_never_recycles_workers_together():
    v = values(SHOP)
    assert v["php_fpm.pm"] == "static" and v["php_fpm.pm_max_requests"] == 0


def test_dynamic_pool_spreads_max_requests_deterministically_per_host():
    hosts = [f"web{i:02d}" for i in range(20)]
    counts = [values(SHOP, with_(BIG, host=h), {"php_fpm.pm": "dynamic"})["php_fpm.pm_max_requests"]
              for h in hosts]
    again = [values(SHOP, with_(BIG, host=h), {"php_fpm.pm": "dynamic"})["php_fpm.pm_max_requests"]
             for h in hosts]
    assert counts == again
    assert len(set(counts)) >= 18 and all(2000 <= c < 4000 for c in counts)


def test_hash_is_stable_across_processes():
    code = ("from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import derive; import sys; sys.stdout.write(str(derive("
            f"{SHOP!r}, {BIG!r}, {{'php_fpm.pm': 'dynamic'}})['php_fpm.pm_max_requests']['value']))")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                           env=dict(os.environ, PYTHONHASHSEED=str(seed))).stdout for seed in (1, 2)}
    assert len(runs) == 1


def test_dynamic_spares_are_ordered():
    v = values(SHOP)
    assert 1 <= v["php_fpm.pm_min_spare_servers"] <= v["php_fpm.pm_start_servers"] \
        <= v["php_fpm.pm_max_spare_servers"] <= v["php_fpm.pm_max_children"]


def test_nginx_descriptors_cover_two_per_connection():
    ev = with_(SHOP, concurrency=200_000)
    v = values(ev, with_(BIG, cpus=16))
    assert v["nginx.worker_connections"] == 25_600         # 2 x 200000 / 16, in steps of 1024
    assert v["nginx.worker_rlimit_nofile"] >= 2 * v["nginx.worker_connections"]
    assert v["limits.nofile"] == v["nginx.worker_rlimit_nofile"] == v["php_fpm.rlimit_files"] == 65_535


def test_concurrency_defaults_to_peak_times_client_timeout():
    v = values(with_(SHOP, concurrency=None), with_(BIG, cpus=2))
    assert v["nginx.worker_connections"] == 7168            # 2 x (640 x 10) / 2 = 6400, next step of 1024


def test_balancer_without_php_fpm_gets_a_limit_from_its_own_rate():
    plan = derive(with_(SHOP, peak_qps=3840), with_(BIG, php_version="", host="lb-1"))
    assert plan["nginx.limit_conn"]["value"] == 3840 * 2     # in flight up to the read timeout
    assert plan["php_fpm.pm_max_children"]["reason"].startswith("(no php-fpm on this host")


def test_web_limit_conn_is_what_the_pool_and_its_queue_can_hold():
    v = values(LAB)
    assert v["nginx.limit_conn"] == v["php_fpm.pm_max_children"] + v["php_fpm.listen_backlog"] == 130


def test_sysctls_raise_never_lower_defaults_and_never_recycle():
    v = values(LAB)
    assert v["sysctl.net.core.somaxconn"] >= 4096
    assert v["sysctl.net.ipv4.tcp_max_tw_buckets"] >= 262_144
    assert v["sysctl.net.ipv4.tcp_tw_reuse"] == 1
    assert v["sysctl.fs.file-max"] >= 1_048_576
    assert not any("recycle" in k for k in v)
    big = values(with_(SHOP, peak_qps=5000, concurrency=None))
    assert big["sysctl.net.ipv4.tcp_max_tw_buckets"] == 600_000   # 5000 x 2 x 60


def test_override_cascades_to_the_keys_computed_from_it():
    plan = derive(SHOP, BIG, {"nginx.upstream_read_timeout": 5})
    assert plan["nginx.upstream_read_timeout"]["reason"].startswith("override (the model says 2")
    assert plan["php_fpm.request_terminate_timeout"]["value"] == 5
    assert plan["php_fpm.listen_backlog"]["value"] == 640        # wait still capped at 1 s


@pytest.mark.parametrize("key, value, words", [
    ("php_fpm.listen_backlog", 100000, "php_fpm.listen_backlog"),
    ("nginx.upstream_read_timeout", 10, "client timeout"),
    ("nginx.upstream_read_timeout", 0, "p99"),
    ("php_fpm.request_terminate_timeout", 30, "work after nginx gave up"),
    ("php_fpm.process_control_timeout", 0, "graceful reload"),
    ("sysctl.net.core.somaxconn", 128, "somaxconn 128"),
    ("nginx.worker_rlimit_nofile", 1024, "2 x worker_connections"),
    ("limits.nofile", 5_000_000, "the most this host allows"),
    ("php_fpm.pm_max_children", 5000, "does not fit"),
    ("nginx.upstream_connect_timeout", 60, "below the client timeout"),
])
def test_invariant_breaking_override_is_refused_naming_host_and_key(key, value, words):
    with pytest.raises(CapacityError) as caught:
        derive(SHOP, BIG, {key: value})
    message = str(caught.value)
    assert message.startswith(f"web-01: override {key}={value} refused:")
    assert words in message and "opsctl_capacity_force" in message and "\n" not in message


def test_dynamic_override_with_unordered_spares_is_refused():
    with pytest.raises(CapacityError, match="pm_min_spare_servers <= pm_start_servers"):
        derive(SHOP, BIG, {"php_fpm.pm": "dynamic", "php_fpm.pm_start_servers": 1})


def test_force_applies_the_override_and_marks_it():
    plan = derive(SHOP, BIG, {"php_fpm.listen_backlog": 100000}, force=True)
    assert plan["php_fpm.listen_backlog"]["value"] == 100000
    assert "[FORCED, breaks:" in plan["php_fpm.listen_backlog"]["reason"]


def test_harmless_override_is_accepted_and_text_numbers_are_read():
    v = values(SHOP, BIG, {"php_fpm.listen_backlog": "50", "nginx.keepalive_timeout": 5})
    assert v["php_fpm.listen_backlog"] == 50 and v["nginx.keepalive_timeout"] == 5


@pytest.mark.parametrize("overrides, words", [
    ({"net.ipv4.tcp_tw_recycle": 1}, "unknown capacity key"),
    ({"php_fpm.pm": "ondemand"}, "'static' or 'dynamic'"),
    ({"php_fpm.listen_backlog": -1}, "whole number"),
    ({"php_fpm.listen_backlog": True}, "whole number"),
    (["php_fpm.pm"], "expected a mapping"),
])
def test_malformed_overrides_are_one_line_errors(overrides, words):
    with pytest.raises(CapacityError, match=words):
        derive(SHOP, BIG, overrides, force=True)


@pytest.mark.parametrize("event, facts, words", [
    (with_(SHOP, peak_qps=0), BIG, "peak_qps"),
    (with_(SHOP, request_time={"typical_ms": 500, "p99_ms": 100}), BIG, "below typical_ms"),
    (with_(SHOP, client_timeout_s=0.2), BIG, "not above the p99 request time"),
    (with_(SHOP, php_worker_memory_mb="48"), BIG, "php_worker_memory_mb"),
    (SHOP, with_(BIG, cpus=0), "facts.cpus"),
    (SHOP, with_(BIG, memory_mb=None), "facts.memory_mb"),
    ("nope", BIG, "opsctl_event"),
])
def test_bad_inputs_are_one_line_errors(event, facts, words):
    with pytest.raises(CapacityError, match=words):
        derive(event, facts)


def test_derived_plans_satisfy_every_invariant_over_a_range_of_profiles():
    for qps in (1, 10, 100, 640, 5000, 50_000):
        for p99, client in ((50, 1.5), (300, 5), (400, 10), (2500, 30), (300, 1), (50, 0.35), (1500, 2)):
            for memory in (1024, 8000, 64000):
                event = with_(SHOP, peak_qps=qps, concurrency=None,
                              request_time={"typical_ms": min(80, p99), "p99_ms": p99}, client_timeout_s=client)
                facts = with_(BIG, memory_mb=memory)
                plan = derive(event, facts)
                assert violations(plan, parse_inputs(event, facts)) == [], (qps, p99, client, memory)


def test_the_roles_filter_is_this_model_and_reads_text_facts():
    plan_filter = FilterModule().filters()["capacity_plan"]
    facts = {"cpus": "8", "memory_mb": "32000", "php_version": "8.2", "host": "web-01"}
    assert plan_filter(SHOP, facts, None, "False") == derive(SHOP, BIG)
    assert plan_filter(SHOP, facts, {"php_fpm.listen_backlog": 100000}, "True")[
        "php_fpm.listen_backlog"]["value"] == 100000


def test_nofile_is_capped_where_processes_cannot_raise_their_hard_limit():
    plan = derive(LAB, with_(BIG, nofile_max=20000))
    assert plan["limits.nofile"]["value"] == plan["nginx.worker_rlimit_nofile"]["value"] == 20000
    assert "capped at 20000" in plan["limits.nofile"]["reason"]
    huge = derive(with_(SHOP, concurrency=200_000), with_(BIG, cpus=2, nofile_max=20000))
    assert huge["nginx.worker_connections"]["value"] == 10000
    assert "capped at 10000" in huge["nginx.worker_connections"]["reason"]
    with pytest.raises(CapacityError, match="the most this host allows"):
        derive(LAB, with_(BIG, nofile_max=20000), {"limits.nofile": 65535})
