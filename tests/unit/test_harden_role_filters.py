"""The in-place editors behind the opsctl_php_fpm and opsctl_nginx roles (their filter plugins)."""

from __future__ import annotations

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
