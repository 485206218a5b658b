"""The in-place editors behind the opsctl_php_fpm and opsctl_nginx roles (their filter plugins)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ansible_collections.opsctl.fleet.plugins.filter import nginx_conf as conf
from ansible_collections.opsctl.fleet.plugins.filter import php_fpm_pool as pool

POOL = """[www]
user = www-data
listen = /run/php/php8.2-fpm.sock
;listen.backlog = 511
pm = dynamic
pm.max_children = 5
;pm.max_requests = 500

[other]
pm = ondemand
"""


def test_pool_keys_are_set_in_place_and_only_in_their_section():
    out = pool.pool_set(POOL, "www", {"pm": "static", "listen.backlog": 15, "rlimit_files": 20000})
    www = pool.pool_values(out, "www")
    assert www["pm"] == "static" and www["listen.backlog"] == "15" and www["rlimit_files"] == "20000"
    assert www["pm.max_children"] == "5"  # "pm" did not match "pm.max_children"
    assert pool.pool_values(out, "other")["pm"] == "ondemand"
    # The vendor's commented default became the live line, where a person looks for it.
    assert out.index("listen.backlog = 15") < out.index("pm = static")
    assert "rlimit_files = 20000\n\n[other]" in out
    assert out.splitlines()[0] == pool.MARKER


def test_pool_set_is_idempotent():
    once = pool.pool_set(POOL, "www", {"pm": "static", "ping.path": "/ping"})
    assert pool.pool_set(once, "www", {"pm": "static", "ping.path": "/ping"}) == once


def test_pool_missing_section_is_an_error():
    with pytest.raises(ValueError, match=r"no \[api\] section"):
        pool.pool_set(POOL, "api", {"pm": "static"})


def test_live_listener_backlog_is_read_from_ss():
    ss = ("u_str LISTEN 0 4096 /run/php/php8.2-fpm.sock 66477 * 0\n"
          "tcp   LISTEN 0 37   127.0.0.1:9000 0.0.0.0:*\n"
          "tcp   LISTEN 0 511  0.0.0.0:9100 0.0.0.0:*\n")
    assert pool.listener_backlog(ss, "/run/php/php8.2-fpm.sock") == 4096
    assert pool.listener_backlog(ss, "127.0.0.1:9000") == 37
    assert pool.listener_backlog(ss, "9100") == 511
    assert pool.listener_backlog(ss, "/run/other.sock") is None


def test_effective_backlog_is_capped_by_somaxconn():
    assert pool.effective_backlog(-1, 4096) == 4096
    assert pool.effective_backlog(65535, "4096") == 4096
    assert pool.effective_backlog("15", 4096) == 15


NGINX = """user www-data;
worker_processes auto;
pid /run/nginx.pid;

events {
\tworker_connections 768;
}

http {
\tkeepalive_timeout 65;
\tserver {
\t\tlisten 8081;
\t}
}
"""


def test_main_and_events_directives_are_set_or_inserted():
    out = conf.main_set(NGINX, {"worker_processes": 2, "worker_rlimit_nofile": 20000},
                        {"worker_connections": 1024}, {"keepalive_timeout": "15s", "proxy_read_timeout": "2s"})
    lines = out.splitlines()
    assert lines[1] == "worker_processes 2;" and lines[2] == "worker_rlimit_nofile 20000;"
    assert "\tworker_connections 1024;" in lines and "768" not in out
    # http-level: replaced where nginx.conf has it, never added (conf.d carries the rest).
    assert "\tkeepalive_timeout 15s;" in lines and "proxy_read_timeout" not in out
    assert conf.main_set(out, {"worker_processes": 2, "worker_rlimit_nofile": 20000},
                         {"worker_connections": 1024}, {"keepalive_timeout": "15s"}) == out


def test_http_has_sees_only_http_level_directives():
    assert conf.http_has(NGINX, ["keepalive_timeout", "listen", "worker_connections"]) == ["keepalive_timeout"]


SITE = """upstream app {
\tserver 10.0.0.21:80 down;  # drained
\tserver 10.0.0.22:80 max_fails=1;
}

server {
\tlisten 80 default_server;
\tlisten [::]:80 default_server backlog=100;
\tlisten 80;
\tlocation / {
\t\tproxy_pass http://app;
\t\tproxy_read_timeout 300s;  # someone's long export
\t}
}

server {
\tlisten 80;
\tserver_name other;
}
"""


def _site(text: str) -> str:
    return conf.site_set(text, 777, "/etc/nginx/snippets/opsctl-server.conf",
                         {"max_fails": 3, "fail_timeout": "10s"}, {"proxy_read_timeout": "2s"})


def test_backlog_goes_on_exactly_one_listen_per_address():
    lines = _site(SITE).splitlines()
    listens = [line.strip() for line in lines if line.strip().startswith("listen")]
    assert listens == ["listen 80 default_server backlog=777;", "listen [::]:80 default_server backlog=777;",
                       "listen 80;", "listen 80;"]


def test_upstream_servers_keep_their_order_and_drain_marker():
    out = _site(SITE)
    assert "\tserver 10.0.0.21:80 down max_fails=3 fail_timeout=10s;  # drained" in out
    assert "\tserver 10.0.0.22:80 max_fails=3 fail_timeout=10s;" in out


def test_site_timeouts_and_shedding_include():
    out = _site(SITE)
    assert "proxy_read_timeout 2s;" in out and "300s" not in out
    assert out.count("include /etc/nginx/snippets/opsctl-server.conf;") == 2  # one per server
    assert _site(out) == out


def test_timeout_overrides_reports_other_files_only():
    dump = ("# configuration file /etc/nginx/nginx.conf:\n\tproxy_read_timeout 1m;\n"
            "# configuration file /etc/nginx/sites-enabled/shop:\n\tfastcgi_read_timeout 300;\n"
            "\tfastcgi_read_timeout 500ms;\n")
    found = conf.timeout_overrides(dump, {"proxy_read_timeout": 2, "fastcgi_read_timeout": 2},
                                   ["/etc/nginx/nginx.conf"])
    assert found == ["/etc/nginx/sites-enabled/shop: fastcgi_read_timeout 300"]


RHEL_MAIN = """user nginx;
events {
    worker_connections 1024;
}
http {
    include /etc/nginx/conf.d/*.conf;
    upstream php-fpm {
        server unix:/run/php-fpm/www.sock;
    }
    server {
        listen       80;
        listen       [::]:80;
        server_name  _;
        include /etc/nginx/default.d/*.conf;
    }
}
"""


def test_a_main_file_whose_http_block_holds_the_server_is_edited_as_a_site():
    # RHEL's nginx.conf: the server, its listens and an upstream sit inside http itself.
    out = _site(RHEL_MAIN)
    assert "listen       80 backlog=777;" in out and "listen       [::]:80 backlog=777;" in out
    assert "server unix:/run/php-fpm/www.sock max_fails=3 fail_timeout=10s;" in out
    assert out.count("include /etc/nginx/snippets/opsctl-server.conf;") == 1
    assert "        include /etc/nginx/snippets/opsctl-server.conf;  # managed by opsctl" in out
    assert _site(out) == out   # idempotent


# --- access logs (opsctl_nginx: issue 15) ------------------------------------------------------------

LAB = Path(__file__).resolve().parents[2] / "opsctl/lab/assets"
PARAMS = {"buffer": "32k", "flush": "250ms"}
SITE_LOGS = """log_format shipper escape=json '{"s":$status}';
log_format main '$remote_addr - $remote_user [$time_local] "$request" '
                '$status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for"';
server {
	access_log /var/log/nginx/shop.log combined if=$loggable;  # the team's note
	access_log /var/log/nginx/shop.gz.log main gzip=4;
	access_log /var/log/nginx/shop.json shipper;
	access_log /var/log/nginx/$host.log;
	access_log /var/log/nginx/own.log combined buffer=8k;
	access_log syslog:server=10.0.0.9 combined;
	access_log off;
	location /a { access_log /var/log/nginx/a.log; error_log /var/log/nginx/a.err; }
}
"""


def _switch(text: str, stock: list[str]) -> str:
    return conf.access_logs_set(text, "opsctl_timing", PARAMS, stock)


@pytest.mark.parametrize("flavor, stock", [("rhel/nginx.conf", ["combined", "main"]),
                                           ("source/nginx.conf", ["combined"])])
def test_the_lab_main_files_switch_their_stock_log_and_put_it_back(flavor, stock):
    text = (LAB / flavor).read_text()
    assert conf.stock_log_formats([text]) == stock
    out = conf.http_include_set(_switch(text, stock), "/etc/nginx/snippets/opsctl-log-format.conf")
    switched = [line for line in out.splitlines() if "access_log" in line]
    assert len(switched) == 1 and "opsctl_timing buffer=32k flush=250ms;  # managed by opsctl, was: access_log" in switched[0]
    # The format is defined first in the http block, before the access_log that names it.
    assert out.index("include /etc/nginx/snippets/opsctl-log-format.conf;") < out.index("opsctl_timing")
    assert out.index("http {") < out.index("include /etc/nginx/snippets/opsctl-log-format.conf;")
    assert conf.http_include_set(_switch(out, stock), "/etc/nginx/snippets/opsctl-log-format.conf") == out
    assert conf.http_include_set(conf.access_logs_set(out, "", PARAMS, stock), "") == text


def test_each_log_keeps_its_path_and_parameters_and_own_formats_stay():
    stock = conf.stock_log_formats(["http {\n}\n", SITE_LOGS])
    assert stock == ["combined", "main"]        # shipper: escape=json and its own layout
    out = _switch(SITE_LOGS, stock).splitlines()
    find = lambda word: next(line.split("  # managed")[0].strip() for line in out if word in line)  # noqa: E731
    assert find("shop.log") == "access_log /var/log/nginx/shop.log opsctl_timing if=$loggable buffer=32k flush=250ms;"
    assert "# the team's note" in next(line for line in out if "shop.log" in line)
    # gzip brings its own buffer; a name with variables cannot be buffered at all; a buffer of
    # the team's own stays.
    assert find("shop.gz.log") == "access_log /var/log/nginx/shop.gz.log opsctl_timing gzip=4 flush=250ms;"
    assert find("$host.log") == "access_log /var/log/nginx/$host.log opsctl_timing;"
    assert find("own.log") == "access_log /var/log/nginx/own.log opsctl_timing buffer=8k flush=250ms;"
    for kept in ("access_log /var/log/nginx/shop.json shipper;", "access_log syslog:server=10.0.0.9 combined;",
                 "access_log off;", "location /a { access_log /var/log/nginx/a.log; error_log /var/log/nginx/a.err; }"):
        assert any(line.strip() == kept for line in out), kept
    assert conf.access_logs_kept(SITE_LOGS, "opsctl_timing", stock) == ["access_log /var/log/nginx/shop.json shipper;"]
    assert conf.access_logs_set("\n".join(out), "", PARAMS, stock) == SITE_LOGS
    # New parameters reach the lines switched before: each is made again from its earlier line.
    again = conf.access_logs_set("\n".join(out), "opsctl_timing", {"buffer": "64k", "flush": "1s"}, stock)
    assert "shop.log opsctl_timing if=$loggable buffer=64k flush=1s;  # managed by opsctl, was: access_log" in again
    assert again == conf.access_logs_set(SITE_LOGS, "opsctl_timing", {"buffer": "64k", "flush": "1s"}, stock)


def test_no_http_block_in_the_main_file_switches_nothing():
    assert conf.stock_log_formats(["events {}\ninclude /etc/nginx/http.conf;\n", SITE_LOGS]) == []
    assert conf.http_include_set("events {}\n", "/x.conf") == "events {}\n"


def test_a_main_format_of_the_teams_own_is_not_stock():
    custom = "http {\nlog_format main '$remote_addr $status $request_time';\n}\n"
    assert conf.stock_log_formats([custom]) == ["combined"]


def test_the_role_gets_the_format_the_reader_compiles():
    from ansible_collections.opsctl.fleet.plugins.plugin_utils import access_log

    got = conf.log_format("opsctl")
    assert got["name"] == "opsctl_timing" and "".join(got["lines"]) == access_log.opsctl_timing().definition
    with pytest.raises(ValueError):
        conf.log_format("json")
