"""The capacity model's split of a host between its php-fpm pools (php_fpm.pools) and the php-fpm
role's list of the pools it manages (plugins/plugin_utils/fpm_pools.py)."""

import pytest
from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import CapacityError, derive, pool_weights
from ansible_collections.opsctl.fleet.plugins.plugin_utils.event_profile import ProfileError, parse_profile
from ansible_collections.opsctl.fleet.plugins.plugin_utils.fpm_pools import managed_pools

LAB = {"peak_qps": 100, "concurrency": 400, "request_time": {"typical_ms": 100, "p99_ms": 300},
       "client_timeout_s": 5, "php_worker_memory_mb": 32}
DEB, PANEL = "/etc/php/8.2/fpm/php-fpm.conf", "/www/server/php/74/etc/php-fpm.conf"
MASTERS = [
    {"conf": PANEL, "binary": "/www/server/php/74/sbin/php-fpm", "pid_file": "/www/server/php/74/var/run/php-fpm.pid",
     "version": "7.4", "slowlog": "", "pools": [
         {"name": "www", "label": "pool www (74)", "listen": "/tmp/php-cgi-74.sock", "file": PANEL}]},
    {"conf": DEB, "binary": "/usr/sbin/php-fpm8.2", "pid_file": "/run/php/php8.2-fpm.pid", "version": "8.2",
     "slowlog": "/var/log/php8.2-fpm.%s.slow.log", "pools": [
         {"name": "api", "label": "pool api (82)", "listen": "127.0.0.1:9100", "file": "/etc/php/8.2/fpm/pool.d/api.conf"},
         {"name": "www", "label": "pool www (82)", "listen": "/run/php/php8.2-fpm.sock",
          "file": "/etc/php/8.2/fpm/pool.d/www.conf"}]},
]


def facts(memory_mb: int = 32000) -> dict:
    return {"cpus": 2, "memory_mb": memory_mb, "php_version": "8.2", "host": "web1", "php_fpm_masters": MASTERS}


def split(event=LAB, memory_mb=32000, overrides=None) -> dict:
    return derive(event, facts(memory_mb), overrides)["php_fpm.pools"]["value"]


def test_without_weights_every_pool_gets_an_even_share_of_peak_and_workers():
    pools = split()
    assert list(pools) == ["pool www (74)", "pool api (82)", "pool www (82)"]
    assert [p["pm_max_children"] for p in pools.values()] == [10, 10, 10]   # 30 = 100 qps x 0.3 s
    assert {p["peak_qps"] for p in pools.values()} == {33.333}
    assert all(p["listen_backlog"] == 34 for p in pools.values())           # ceil(33.3 qps x 1 s)


def test_weights_by_listen_address_or_name_and_one_for_a_pool_not_named():
    pools = split(dict(LAB, pools={"unix:/tmp/php-cgi-74.sock": 2, "api": 1}))
    assert [p["weight"] for p in pools.values()] == [2, 1, 1]
    # 15, 7.5, 7.5: the odd worker goes to the first of the tied remainders.
    assert [p["pm_max_children"] for p in pools.values()] == [15, 8, 7]
    assert pools["pool www (74)"]["peak_qps"] == 50 and pools["pool www (74)"]["listen_backlog"] == 50
    assert pool_weights({"www": 3}, [{"name": "www", "listen": "/a"}, {"name": "api", "listen": "/b"}]) == [3, 1]


def test_a_host_short_of_memory_splits_what_memory_allows_and_says_so():
    plan = derive(LAB, facts(memory_mb=1200))
    total = plan["php_fpm.pm_max_children"]["value"]
    assert total < 30 and "CANNOT carry it" in plan["php_fpm.pm_max_children"]["reason"]
    pools = plan["php_fpm.pools"]
    assert sum(p["pm_max_children"] for p in pools["value"].values()) == total
    assert f"split the host's {total} workers ({total * 32} MB of the 560 MB left for php-fpm)" in pools["reason"]


def test_each_pool_keeps_the_order_php_fpm_needs_when_dynamic():
    pools = split(dict(LAB, pools={"www": 7}), overrides={"php_fpm.pm": "dynamic"})
    for p in pools.values():
        assert 1 <= p["pm_min_spare_servers"] <= p["pm_start_servers"] <= p["pm_max_spare_servers"] <= p["pm_max_children"]


def test_a_backlog_override_sets_every_pool_and_a_workers_override_is_the_hosts_total():
    pools = split(overrides={"php_fpm.listen_backlog": 20, "php_fpm.pm_max_children": 12})
    assert [p["listen_backlog"] for p in pools.values()] == [20, 20, 20]
    assert [p["pm_max_children"] for p in pools.values()] == [4, 4, 4]


@pytest.mark.parametrize("pools, message", [
    ({"www": 0}, "expected a whole weight from 1 to 1000"),
    ({"www": 1.5}, "expected a whole weight"),
    ({"w w": 1}, "is not a pool name or listen address"),
    (["www"], "expected a mapping of pool name or listen address"),
])
def test_bad_weights_are_refused_naming_the_key(pools, message):
    with pytest.raises(ProfileError, match=message):
        parse_profile(dict(LAB, pools=pools))
    with pytest.raises(CapacityError, match=message):
        derive(dict(LAB, pools=pools), facts())


def test_the_role_manages_every_pool_of_every_master_with_its_own_sizes_and_status_port():
    plan = derive(LAB, facts())
    empty = dict.fromkeys(("listen.backlog", "pm.max_children", "pm.start_servers", "pm.min_spare_servers",
                           "pm.max_spare_servers"), "")
    pools = managed_pools(MASTERS, [], plan, {}, empty, 9001)
    # Ordered by the master's configuration path, so ports survive a restart (pids change).
    assert [(p["master"]["conf"], p["name"], p["status_listen"]) for p in pools] == [
        (DEB, "api", "127.0.0.1:9001"), (DEB, "www", "127.0.0.1:9002"), (PANEL, "www", "127.0.0.1:9003")]
    assert pools[2]["dest"] == PANEL and pools[2]["master"]["pidfile"] == "/www/server/php/74/var/run/php-fpm.pid"
    assert all(p["sized"]["pm.max_children"] == 10 and p["sized"]["listen.backlog"] == 34 for p in pools)
    # A role variable set for the host sets every pool; a pool's entry picks it by name and master.
    wanted = [{"name": "www", "master": PANEL, "status_listen": "127.0.0.1:9500", "settings": {"pm.max_children": 3}}]
    pools = managed_pools(MASTERS, wanted, plan, {}, dict(empty, **{"listen.backlog": 16}), 9001)
    assert [p["sized"]["listen.backlog"] for p in pools] == [16, 16, 16]
    assert (pools[2]["status_listen"], pools[2]["settings"]) == ("127.0.0.1:9500", {"pm.max_children": 3})
    assert pools[1]["settings"] == {}


def test_without_a_running_master_the_layout_and_the_named_pools_are_managed():
    layout = {"conf": DEB, "binary": "/usr/sbin/php-fpm8.2", "pidfile": "/run/php/php8.2-fpm.pid",
              "pool_dir": "/etc/php/8.2/fpm/pool.d", "slowlog": "/var/log/php8.2-fpm.%s.slow.log", "version": "8.2"}
    plan = derive(LAB, {"cpus": 2, "memory_mb": 32000, "php_version": "", "host": "web1"})
    assert "php_fpm.pools" not in plan   # no pool runs: the host's own figures apply
    empty = dict.fromkeys(("listen.backlog", "pm.max_children", "pm.start_servers", "pm.min_spare_servers",
                           "pm.max_spare_servers"), "")
    pools = managed_pools([], [], plan, layout, empty, 9001)
    assert [(p["dest"], p["status_listen"], p["sized"]["pm.max_children"]) for p in pools] == [
        ("/etc/php/8.2/fpm/pool.d/www.conf", "127.0.0.1:9001", plan["php_fpm.pm_max_children"]["value"])]
    pools = managed_pools([], [{"name": "shop"}], plan, layout, empty, 9001)
    assert [p["dest"] for p in pools] == ["/etc/php/8.2/fpm/pool.d/shop.conf"]
