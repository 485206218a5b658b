"""Issue 11 item 8, the pure logic: the rules of plugins/plugin_utils/configvalues.py, and that every role that
writes configuration checks every one of its inputs with them (the lab tests are in
tests/integration/test_sec_inject_lab.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.opsctl.fleet.plugins.filter.configvalues import FilterModule
from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import VARIABLES, inventory_problem, problem


REPO = Path(__file__).resolve().parents[2]
ROLES = ("opsctl_sysctl", "opsctl_limits", "opsctl_php_fpm", "opsctl_nginx", "opsctl_lifecycle")


@pytest.mark.parametrize("name, value, expected", [
    ("opsctl_sysctl_extra", {"net.core.somaxconn": "4096\nkernel.core_pattern=|/tmp/x"}, "contains a newline"),
    ("opsctl_sysctl_extra", {"net.core.somaxconn": "4096\r"}, "contains a carriage return"),
    ("opsctl_sysctl_extra", {"net.core.somaxconn": "4096\x1b[2J"}, "control character U+001B"),
    ("opsctl_sysctl_extra", {"net.core.somaxconn": "4096\u2028x"}, "control character U+2028"),
    ("opsctl_sysctl_extra", {"net core": 1}, "is not a sysctl key"),
    ("opsctl_sysctl_extra", {"net/../../etc": 1}, "is not a sysctl key"),
    ("opsctl_sysctl_extra", {"net.x": 'a"b'}, "may not hold '\"'"),
    ("opsctl_sysctl_extra", {"net.x": {"a": 1}}, "expected a single value"),
    ("opsctl_sysctl_file", "etc/sysctl.d/x.conf", "is not an absolute path"),
    ("opsctl_php_fpm_pools", [{"name": "www", "settings": {"pm.max_children": "5\nx = 1"}}], "settings['pm.max_children']: contains a newline"),
    ("opsctl_php_fpm_pools", [{"name": "www", "settings": {"pm = 5": 1}}], "is not a php-fpm key"),
    ("opsctl_php_fpm_pools", [{"name": "www", "settings": {"php_value[a]b": 1}}], "is not a php-fpm key"),
    ("opsctl_php_fpm_pools", [{"name": "../../cron.d/x"}], "is not a pool name"),
    ("opsctl_php_fpm_pools", [{"name": "www]\n[evil"}], "contains a newline"),
    ("opsctl_php_fpm_pools", [{"name": "www", "status_listen": "127.0.0.1:9001\nlisten = 0"}], "status_listen: contains a newline"),
    ("opsctl_php_fpm_pools", {"name": "www"}, "expected a list"),
    ("opsctl_php_fpm_status_path", "/status\nping.path = /x", "contains a newline"),
    ("opsctl_php_fpm_ping_path", "ping", "is not a URI path"),
    ("opsctl_php_fpm_version", "8.2/../../x", "is not a PHP version"),
    ("opsctl_nginx_status_path", "/s { return 200; }", "is not a URI path"),
    ("opsctl_nginx_overload_page", "/../../etc/cron.d/x", "climbs out of its directory"),
    ("opsctl_nginx_server_snippet", "/etc/nginx/x.conf; include /tmp/y", "not ';'"),
    ("opsctl_nginx_overload_root", "/var/www/$host", "not '$'"),
    ("opsctl_nginx_sites", "/etc/nginx/sites-enabled/default", "expected a list"),
    ("opsctl_nginx_status_listen", "127.0.0.1:8080 default_server; include /x", "is not an nginx listen address"),
    ("opsctl_nginx_upstream_read_timeout", "30\n", "contains a newline"),
    ("opsctl_nginx_upstream_read_timeout", "30s", "to the millisecond"),
    ("opsctl_nginx_upstream_read_timeout", 0.0005, "to the millisecond"),
    ("opsctl_nginx_worker_processes", "auto;", "is not auto or a number of workers"),
    ("opsctl_nginx_worker_processes", "4 ; user root", "is not auto or a number of workers"),
    ("opsctl_nginx_access_log_flush", "1s; access_log /tmp/x", "is not an nginx time such as 60s"),
    ("opsctl_nginx_access_log_buffer", "32k if=$x", "is not an nginx size such as 32k"),
    ("opsctl_nginx_log_format_conf", "/etc/nginx/x.conf; include /tmp/y", "not ';'"),
    ("opsctl_limits_users", ["root\n* hard core unlimited"], "contains a newline"),
    ("opsctl_limits_users", ["root hard"], "is not a limits.conf domain"),
    ("opsctl_limits_units", ["../../../etc/cron.d/x"], "is not a systemd unit name"),
    ("opsctl_lifecycle_backup_dir", "/x; rm -rf /", "not ';'"),
    ("opsctl_lifecycle_cron_paths", ["/etc/cron.d", "/etc/$(id)"], "not '$'"),
    ("opsctl_capacity_overrides", {"sysctl.net.core.somaxconn": "4096\n"}, "contains a newline"),
])
def test_bad_values_are_refused_in_one_line_naming_the_variable(name, value, expected):
    found = problem(name, value)
    assert found is not None and found.startswith(name) and expected in found, found
    assert "\n" not in found and "\r" not in found and "\x1b" not in found


@pytest.mark.parametrize("name, value", [
    ("opsctl_sysctl_extra", {"net.ipv4.tcp_rmem": "4096 87380 6291456", "net.ipv4.conf.eth0/100.rp_filter": 1}),
    ("opsctl_sysctl_at_least", ["fs.file-max"]),
    ("opsctl_php_fpm_pools", [{"name": "www", "status_listen": "127.0.0.1:9001", "settings": {
        "pm.max_children": 40, "php_admin_value[error_log]": "/var/log/fpm-www.log", "listen": "/run/php/www.sock",
        "catch_workers_output": True}}]),
    ("opsctl_php_fpm_pools", [{"name": "shop-api", "status_listen": "[::1]:9002"}]),
    ("opsctl_php_fpm_version", ""), ("opsctl_php_fpm_version", "8.2"),
    ("opsctl_php_fpm_slowlog", ""), ("opsctl_php_fpm_status_path", "/fpm-status"),
    ("opsctl_nginx_worker_processes", "auto"), ("opsctl_nginx_worker_processes", 4),
    ("opsctl_nginx_status_listen", "unix:/run/nginx-status.sock"), ("opsctl_nginx_status_listen", "8080"),
    ("opsctl_nginx_sites", ["/etc/nginx/sites-enabled/default", "/etc/nginx/conf.d/shop.conf"]),
    ("opsctl_nginx_upstream_read_timeout", "30"), ("opsctl_limits_nofile", 65535),
    ("opsctl_nginx_access_log_flush", "250ms"), ("opsctl_nginx_access_log_buffer", "64k"),
    ("opsctl_limits_users", ["*", "root", "@www-data", "1000:", "%admins"]),
    ("opsctl_limits_units", ["php8.2-fpm.service", "nginx@a.service"]),
    ("opsctl_limits_nginx_default_file", ""), ("opsctl_lifecycle_backup_dir", "/var/backups/opsctl/lifecycle"),
    ("opsctl_capacity_overrides", {"php_fpm.listen_backlog": 64, "php_fpm.pm": "static"}),
])
def test_good_values_pass(name, value):
    assert problem(name, value) is None


def test_inventory_values_still_to_be_templated_are_left_to_the_roles():
    assert inventory_problem({"opsctl_sysctl_settings": {"net.core.somaxconn": "{{ my_value }}"},
                              "ansible_host": "10.0.0.1\nx", "opsctl_nginx_sites": ["/etc/nginx/x"]}) is None
    assert inventory_problem({"opsctl_nginx_sites": ["/etc/nginx/x\n"]}).startswith("opsctl_nginx_sites[0]:")


def test_the_filter_checks_a_role_dict_or_only_known_names():
    run = FilterModule().filters()["config_problem"]
    assert run({"opsctl_sysctl_file": "/etc/sysctl.d/60-opsctl.conf"}) == ""
    assert run({"opsctl_sysctl_file": "x"}).startswith("opsctl_sysctl_file:")
    assert run({"inventory_hostname": "web1", "opsctl_php_fpm_ping_path": "/p\n"}, True).startswith("opsctl_php_fpm_ping_path")
    with pytest.raises(KeyError):
        run({"not_a_role_variable": 1})


def _validated(role: str) -> set[str]:
    text = (REPO / "ansible_collections/opsctl/fleet/roles" / role / "tasks" / "validate.yml").read_text()
    pairs = re.findall(r"'(opsctl_\w+)': (opsctl_\w+)", text)
    assert all(name == value for name, value in pairs), pairs     # each checked under its own name
    return {name for name, _ in pairs}


@pytest.mark.parametrize("role", ROLES)
def test_every_role_checks_every_input_first(role):
    spec = yaml.safe_load((REPO / "ansible_collections/opsctl/fleet/roles" / role / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]
    inputs = {name for name, o in options.items() if o.get("type") != "bool" and name.startswith(role + "_")}
    assert inputs <= set(VARIABLES), inputs - set(VARIABLES)
    assert inputs == _validated(role)
    main = yaml.safe_load((REPO / "ansible_collections/opsctl/fleet/roles" / role / "tasks" / "main.yml").read_text())
    assert main[0]["ansible.builtin.import_tasks"] == "validate.yml"
    assert "opsctl.fleet.config_problem" in (REPO / "ansible_collections/opsctl/fleet/roles" / role / "tasks"
                                             / "validate.yml").read_text()


def test_the_capacity_gate_runs_before_every_other_role():
    main = yaml.safe_load((REPO / "ansible_collections/opsctl/fleet/roles/opsctl_capacity/tasks/main.yml").read_text())
    assert [t["ansible.builtin.include_tasks"]["file"] for t in main] == ["plan.yml"]
    tasks = yaml.safe_load((REPO / "ansible_collections/opsctl/fleet/roles/opsctl_capacity/tasks/plan.yml").read_text())
    assert tasks[-1]["ansible.builtin.import_tasks"] == "validate.yml"
    gate = yaml.safe_load((REPO / "ansible_collections/opsctl/fleet/roles/opsctl_capacity/tasks/validate.yml").read_text())[0]
    assert gate["any_errors_fatal"] is True and "opsctl.fleet.config_problem(true)" in str(gate["vars"])
    play = yaml.safe_load((REPO / "ansible_collections/opsctl/fleet/playbooks/harden.yml").read_text())[0]
    assert play["roles"][0]["role"] == "opsctl.fleet.opsctl_capacity" and "always" in play["roles"][0]["tags"]
