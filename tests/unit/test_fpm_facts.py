"""Discovery's masters and every php-fpm master's -tt, as the probe prints them."""

from __future__ import annotations

from ansible_collections.opsctl.fleet.plugins.plugin_utils.fpm_facts import (parse_fpm_status, parse_masters,
                                                                             parse_php_fpm, version_key)
from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import parse

MASTERS = """php-fpm running 20 /usr/local/php/sbin/php-fpm /usr/local/php/etc/php-fpm.conf - unit=- scripts=/etc/init.d/php-fpm
php-fpm running 31 /www/server/php/74/sbin/php-fpm /www/server/php/74/etc/php-fpm.conf - unit=php-fpm-74.service scripts=-
nginx running 24 /usr/local/nginx/sbin/nginx /usr/local/nginx/conf/nginx.conf /usr/local/nginx unit=- scripts=-
php-fpm stopped - /usr/sbin/php-fpm8.2 - - unit=php8.2-fpm.service scripts=-
"""


def _tt(state: str, pid: str, binary: str, conf: str, version: str, pct: str, pools: list[tuple[str, str]],
        rc: int = 0) -> str:
    lines = [f"### master {state} {pid} {binary} {conf}", f"PHP {version}.1 (fpm-fcgi) (built: Jan  1 2026)",
             "[01-Jan-2026 00:00:00] NOTICE: [global]",
             f"[01-Jan-2026 00:00:00] NOTICE: \tprocess_control_timeout = {pct}"]
    for name, listen in pools:
        lines += [f"[01-Jan-2026 00:00:00] NOTICE: [{name}]", f"[01-Jan-2026 00:00:00] NOTICE: \tlisten = {listen}",
                  "[01-Jan-2026 00:00:00] NOTICE: \tpm.max_children = 5",
                  "[01-Jan-2026 00:00:00] NOTICE: \tpm.status_path = /phpfpm_status"]
    return "\n".join(lines + [f"### rc {rc}"]) + "\n"


TWO = (_tt("running", "20", "/usr/local/php/sbin/php-fpm", "/usr/local/php/etc/php-fpm.conf", "8.2", "0s",
           [("www", "/tmp/php-cgi.sock"), ("shop", "127.0.0.1:9001")])
       + _tt("running", "31", "/www/server/php/74/sbin/php-fpm", "/www/server/php/74/etc/php-fpm.conf", "7.4", "10s",
             [("www", "/tmp/php-cgi-74.sock")]))


def test_masters_lines_become_one_entry_each_with_what_starts_it():
    found = parse_masters(MASTERS)
    assert [(m["kind"], m["running"], m["pid"]) for m in found] == [
        ("php-fpm", True, 20), ("php-fpm", True, 31), ("nginx", True, 24), ("php-fpm", False, None)]
    assert found[0]["scripts"] == ["/etc/init.d/php-fpm"] and found[0]["unit"] == ""
    assert found[1]["unit"] == "php-fpm-74.service" and found[1]["scripts"] == []
    assert found[2]["conf"] == "/usr/local/nginx/conf/nginx.conf" and found[2]["prefix"] == "/usr/local/nginx"


def test_two_masters_keep_every_pool_apart():
    fpm = parse_php_fpm(TWO, somaxconn=4096)
    assert fpm["present"] and [m["version"] for m in fpm["masters"]] == ["8.2", "7.4"]
    assert fpm["version"] == "8.2"  # the newest running master, by version, not by string
    assert [(p["name"], p["version"]) for p in fpm["pools"]] == [("www", "8.2"), ("shop", "8.2"), ("www", "7.4")]
    labels = [p["label"] for p in fpm["pools"]]
    assert len(set(labels)) == 3 and labels[2] == "pool www (php-fpm 7.4 /www/server/php/74/etc/php-fpm.conf)"
    assert [m["global"]["process_control_timeout"] for m in fpm["masters"]] == [0, 10]
    assert fpm["unreadable"] == []


def test_one_master_keeps_the_short_pool_label():
    fpm = parse_php_fpm(_tt("running", "20", "/usr/sbin/php-fpm8.2", "/etc/php/8.2/fpm/php-fpm.conf", "8.2", "0s",
                            [("www", "/run/php/php8.2-fpm.sock")]), 4096)
    assert fpm["pools"][0]["label"] == "pool www"


def test_status_answers_go_to_the_pool_of_their_listener():
    fpm = parse_php_fpm(TWO, somaxconn=4096)
    text = ("### pool /tmp/php-cgi-74.sock www\nContent-type: application/json\r\n\r\n"
            '{"pool":"www","listen queue":3,"max children reached":1}\n')
    assert parse_fpm_status(text, fpm) == ""
    statuses = [p["status"] for p in fpm["pools"]]
    assert statuses[0] is None and statuses[2] == {"pool": "www", "listen_queue": 3, "max_children_reached": 1}


def test_a_running_master_whose_configuration_fails_is_unreadable_with_the_reason():
    broken = ("### master running 20 /usr/local/php/sbin/php-fpm /usr/local/php/etc/php-fpm.conf\n"
              "PHP 8.2.1 (fpm-fcgi)\n"
              "[01-Jan-2026 00:00:00] ERROR: [/usr/local/php/etc/php-fpm.d/www.conf:3] value is NULL for a ZEND_INI_PARSER_ENTRY\n"
              "[01-Jan-2026 00:00:00] ERROR: failed to load configuration file '/usr/local/php/etc/php-fpm.conf'\n"
              "### rc 78\n")
    fpm = parse_php_fpm(broken, 4096)
    assert fpm["present"] and fpm["pools"] == []
    assert fpm["unreadable"] == [{"label": "php-fpm 8.2 /usr/local/php/etc/php-fpm.conf",
                                  "error": "[/usr/local/php/etc/php-fpm.d/www.conf:3] value is NULL for a ZEND_INI_PARSER_ENTRY"}]
    unreadable_binary = ("### master running 20 - /usr/local/php/etc/php-fpm.conf\n"
                         "ERROR: the binary of master pid 20 is not readable (/proc/20/exe); probe as root\n### rc 1\n")
    assert "not readable" in parse_php_fpm(unreadable_binary, 4096)["unreadable"][0]["error"]


def test_a_stopped_install_is_installed_not_present():
    fpm = parse_php_fpm(_tt("stopped", "-", "/usr/sbin/php-fpm8.2", "-", "8.2", "0s", [("www", "/run/x.sock")]), 4096)
    assert fpm["installed"] and not fpm["present"] and fpm["unreadable"] == []


def test_versions_compare_as_numbers():
    assert sorted(["10.0", "7.4", "8.2", ""], key=version_key) == ["", "7.4", "8.2", "10.0"]


def test_the_roles_fallback_picks_the_newest_binary_as_a_version():
    from ansible_collections.opsctl.fleet.plugins.filter.php_fpm_pool import FilterModule

    newest = FilterModule().filters()["php_fpm_newest"]
    assert newest(["/usr/sbin/php-fpm8.9", "/usr/sbin/php-fpm8.10", "/usr/sbin/php-fpm7.4"]) == "8.10"
    assert newest(["/usr/sbin/php-fpm"]) == "" and newest([]) == ""


def test_each_master_gets_its_own_init_script_and_unit():
    raw = {"probe": 1, "sections": {
        "masters": {"out": MASTERS, "rc": 0},
        "php_fpm_tt": {"out": TWO, "rc": 0},
        "init_scripts": {"out": "### file /etc/init.d/php-fpm\n40:\tkill -QUIT `cat $php_fpm_PID`\n"
                                "70:\tkill -USR2 `cat $php_fpm_PID`\n", "rc": 0},
        "systemd_units": {"out": "### file /etc/systemd/system/php-fpm-74.service\nExecStart=/www/server/php/74/sbin/php-fpm\n"
                                 "ExecReload=/bin/kill -USR2 $MAINPID\n", "rc": 0}}}
    facts = parse(raw)
    first, second = facts["php_fpm"]["masters"]
    assert first["init"]["stop_signal"] == "QUIT" and first["init"]["reload_signal"] == "USR2" and first["systemd"] is None
    assert second["init"] is None and second["systemd"]["kill_signal"] == "SIGTERM"
    assert "USR2" in second["systemd"]["exec_reload"]
    assert facts["nginx"]["master"]["binary"] == "/usr/local/nginx/sbin/nginx"


def test_each_pool_knows_the_file_that_defines_it():
    text = TWO.replace("### master running 20 /usr/local/php/sbin/php-fpm /usr/local/php/etc/php-fpm.conf\n",
                       "### master running 20 /usr/local/php/sbin/php-fpm /usr/local/php/etc/php-fpm.conf\n"
                       "### defines /usr/local/php/etc/php-fpm.conf global\n"
                       "### defines /usr/local/php/etc/php-fpm.d/www.conf www\n"
                       "### defines /usr/local/php/etc/php-fpm.d/zz.conf www\n")
    pools = parse_php_fpm(text, 4096)["pools"]
    # php-fpm reads the files in order and a later [www] overrides: the last one is where a
    # setting takes effect.
    assert [p["file"] for p in pools] == ["/usr/local/php/etc/php-fpm.d/zz.conf", "", ""]


def test_nginx_layout_names_the_sites_and_the_http_include_directory():
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import parse_nginx

    dump = "\n".join([
        "nginx: the configuration file /usr/local/nginx/conf/nginx.conf syntax is ok",
        "# configuration file /usr/local/nginx/conf/nginx.conf:",
        "events { worker_connections 1024; }",
        "http { include mime.types; include vhost/*.conf; include /etc/extra/*.conf; }",
        "# configuration file /usr/local/nginx/conf/mime.types:",
        "types { text/html html; }",
        "# configuration file /usr/local/nginx/conf/vhost/shop.conf:",
        "server { listen 80; location ~ \\.php$ { fastcgi_pass unix:/tmp/php-cgi.sock; } }",
        "# configuration file /usr/local/nginx/conf/vhost/opsctl-status.conf:",
        "# managed by opsctl (role opsctl_nginx): nginx's own counters, for this host only.",
        "server { listen 127.0.0.1:8080; }",
        "# configuration file /etc/extra/shop2.conf:",
        "server { listen 81; }",
    ])
    layout = parse_nginx(dump.replace("server { listen 81; }", "server { listen 81; access_log logs/shop2.log; }"), 0, 2)["layout"]
    assert layout == {"conf": "/usr/local/nginx/conf/nginx.conf", "http_dir": "/usr/local/nginx/conf/vhost",
                      "sites": ["/usr/local/nginx/conf/vhost/shop.conf", "/etc/extra/shop2.conf"],
                      "logs": ["/usr/local/nginx/logs/shop2.log"]}   # relative: below the prefix


def test_every_log_is_matched_with_the_logrotate_rule_that_rotates_it():
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.log_facts import logrotate_patterns, rotation_of

    section = "\n".join([
        "### file /etc/logrotate.conf", "weekly", "include /etc/logrotate.d",
        "### file /etc/logrotate.d/nginx", "/var/log/nginx/*.log {", "daily", "postrotate",
        '[ -s ${PIDFILE} ] && kill -USR1 "$(cat ${PIDFILE})"', "endscript", "}",
        "### file /etc/logrotate.d/app", '"/srv/app/a.log" /srv/app/b.log', "/srv/app/c.log {", "weekly", "}"])
    rules = logrotate_patterns(section)
    assert rules == [{"source": "/etc/logrotate.d/nginx", "patterns": ["/var/log/nginx/*.log"]},
                     {"source": "/etc/logrotate.d/app", "patterns": ["/srv/app/a.log", "/srv/app/b.log", "/srv/app/c.log"]}]
    logs = rotation_of([("/var/log/nginx/access.log", "nginx"), ("/srv/app/b.log", "php-fpm"),
                        ("/usr/local/nginx/logs/access.log", "nginx")], rules)
    assert [l["rotated_by"] for l in logs] == ["/etc/logrotate.d/nginx", "/etc/logrotate.d/app", ""]


def test_unit_drop_ins_override_the_unit_whichever_directory_is_read_first():
    # The probe reads /etc/systemd/system before /usr/lib: systemd still applies the unit file
    # first and its drop-ins after it, in the order of their names.
    units = ("### file /etc/systemd/system/nginx.service.d/opsctl-graceful.conf\nTimeoutStopSec=10\nKillMode=mixed\n"
             "### file /etc/systemd/system/nginx.service.d/zz-local.conf\nTimeoutStopSec=1min 30s\n"
             "### file /usr/lib/systemd/system/nginx.service\nKillSignal=SIGQUIT\nTimeoutStopSec=5\n"
             "### file /lib/systemd/system/nginx.service\nTimeoutStopSec=1\n"
             "### file /usr/lib/systemd/system/php-fpm.service\nExecStart=/usr/sbin/php-fpm --nodaemonize\n")
    facts = parse({"probe": 1, "sections": {"systemd_units": {"out": units, "rc": 0}}})
    nginx, fpm = facts["unit_files"]["nginx.service"], facts["unit_files"]["php-fpm.service"]
    assert (nginx["kill_signal"], nginx["kill_mode"], nginx["timeout_stop_s"]) == ("SIGQUIT", "mixed", 90.0)
    assert nginx["unit"] == "/usr/lib/systemd/system/nginx.service" and len(nginx["dropins"]) == 2
    # systemd's defaults where a unit says nothing: SIGTERM to the whole cgroup after 90 s.
    assert (fpm["kill_signal"], fpm["kill_mode"], fpm["timeout_stop_s"]) == ("SIGTERM", "control-group", 90.0)
