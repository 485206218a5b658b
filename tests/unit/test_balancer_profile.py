"""The balancer in front of a fleet that opsctl does not manage (an SLB, an ALB, an F5, LVS): its
description in the event profile, what the capacity model makes of its idle timeout, and the
checks that say when its health checks or nginx's keepalive do not fit it (issue 16, item 3)."""

from __future__ import annotations

import pytest

from ansible_collections.opsctl.fleet.plugins.plugin_utils import capacity
from ansible_collections.opsctl.fleet.plugins.plugin_utils.event_profile import ProfileError, parse_profile
from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import parse_nginx

from opsctl.checks.run import load_checks

PROFILE = {"peak_qps": 100, "request_time": {"typical_ms": 100, "p99_ms": 300}, "client_timeout_s": 5,
           "php_worker_memory_mb": 32}
FACTS = {"cpus": 2, "memory_mb": 4096, "somaxconn": 4096, "php_version": "8.2", "host": "web1"}
SLB = {"name": "slb", "layer": 7, "idle_timeout_s": 60, "health_check_interval_s": 5, "health_check_fall": 3}


def test_the_balancer_is_optional_and_described_in_the_profile():
    assert parse_profile(PROFILE).balancer is None
    balancer = parse_profile(dict(PROFILE, balancer=SLB)).balancer
    assert (balancer.name, balancer.layer, balancer.idle_timeout_s, balancer.ejection_s) == ("slb", 7, 60, 15)
    assert parse_profile(dict(PROFILE, balancer={})).balancer.layer == 4


@pytest.mark.parametrize("balancer, message", [
    ({"layer": 3}, "opsctl_event.balancer.layer: expected 4 or 7, got 3"),
    ({"health_check_interval_s": 5}, "give health_check_interval_s and health_check_fall together"),
    ({"health_check_interval_s": 5, "health_check_fall": 2.5}, "health_check_fall: expected a whole number"),
    ({"idle_timeout_s": 99999}, "idle_timeout_s: 99999 is out of range"),
    ({"idle": 60}, "unknown key"),
])
def test_a_bad_balancer_is_one_line_naming_the_key(balancer, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile(dict(PROFILE, balancer=balancer))


def test_keepalive_outlives_a_layer_7_balancers_idle_timeout():
    plan = capacity.derive(dict(PROFILE, balancer=SLB), FACTS)
    assert plan["nginx.keepalive_timeout"]["value"] == 65
    assert "slb's idle timeout 60 s + 5 s" in plan["nginx.keepalive_timeout"]["reason"]
    # A layer-4 balancer passes the client's own connection through: nginx's usual 15 s.
    assert capacity.derive(dict(PROFILE, balancer=dict(SLB, layer=4)), FACTS)["nginx.keepalive_timeout"]["value"] == 15


def test_nginx_keepalive_per_server():
    dump = ("# configuration file /etc/nginx/nginx.conf:\n"
            "events { worker_connections 512; }\n"
            "http { keepalive_timeout 15s; server { server_name a; } server { server_name b; keepalive_timeout 2m; }\n"
            "server { listen 127.0.0.1:8080; server_name status; } }\n")
    facts = parse_nginx(dump, 0, 2)
    assert facts["keepalive"] == [{"server": "a", "timeout": 15.0}, {"server": "b", "timeout": 120.0}]
    stock = parse_nginx("# configuration file /etc/nginx/nginx.conf:\nhttp { server { } }\n", 0, 2)
    assert stock["keepalive"] == [{"server": "_", "timeout": 75.0}]


def _results(check_id: str, profile: dict, nginx: dict | None = None) -> list:
    engine, _ = load_checks()
    facts = {"nginx": nginx or {"present": False}}
    context = {"facts": facts, "profile": parse_profile(profile).as_dict(), "event": None, "expected": {}}
    return [r for r in engine.evaluate("web1", context) if r.check == check_id]


def test_a_health_check_slower_than_the_clients_is_said_with_its_numbers():
    [slow] = _results("balancer-health-check", dict(PROFILE, balancer=SLB))
    assert slow.status == "warn" and "3 failed probes x 5.0s = 15.0s" in slow.observed
    assert "every 1.6s or less with 3 failed probes" in slow.remediation
    [fast] = _results("balancer-health-check", dict(PROFILE, balancer=dict(SLB, health_check_interval_s=1)))
    assert fast.status == "pass"
    assert _results("balancer-health-check", PROFILE) == []


def test_nginx_keepalive_shorter_than_the_balancers_idle_timeout_fails():
    nginx = {"present": True, "keepalive": [{"server": "_", "timeout": 15.0}, {"server": "api", "timeout": 65.0}]}
    found = {r.item: r.status for r in _results("balancer-idle-keepalive", dict(PROFILE, balancer=SLB), nginx)}
    assert found == {"server _": "fail", "server api": "pass"}
    assert _results("balancer-idle-keepalive", dict(PROFILE, balancer=dict(SLB, layer=4)), nginx) == []
