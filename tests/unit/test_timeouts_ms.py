"""Timeouts finer than a second: one rounding and one writing of a millisecond timeout, the checks
judging the millisecond values nginx -T shows, and a client timeout too short refused by the CLI."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from ansible_collections.opsctl.fleet.plugins.filter.nginx_conf import FilterModule as NginxFilters
from ansible_collections.opsctl.fleet.plugins.plugin_utils import durations
from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import derive
from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import _filter_evaluate
from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import parse_nginx
from tests.conftest import REPO, opsctl

CATALOG = (REPO / "ansible_collections/opsctl/fleet/roles/opsctl_preflight/files/catalog.yml").read_text()
API = {"peak_qps": 100, "concurrency": 400, "request_time": {"typical_ms": 100, "p99_ms": 300},
       "client_timeout_s": 1, "php_worker_memory_mb": 32}
FACTS = {"cpus": 2, "memory_mb": 4096, "php_version": "8.2", "host": "web1"}


def test_a_millisecond_timeout_is_written_and_read_back_by_the_one_nginx_time_rule():
    for ms in range(1, 5001):
        text = durations.time_text(ms / 1000)
        assert durations.nginx_seconds(text) == durations.seconds_of(ms) == ms / 1000, text
    assert [durations.time_text(s) for s in (2, 2.0, 0.8, 1.5, 0.3, 120)] == \
        ["2s", "2s", "800ms", "1500ms", "300ms", "120s"]
    assert NginxFilters().filters()["nginx_time"](0.8) == "800ms"
    assert [durations.ceil_seconds(ms) for ms in (1, 800, 1000, 1001, 2000)] == [1, 1, 1, 2, 2]
    assert (durations.millis(1.1), durations.millis(0.3), durations.millis(0.0005)) == (1100, 300, 1)
    assert [durations.nginx_seconds(t) for t in ("500ms", "1s", "2m", "1m500ms")] == [0.5, 1, 120, 60.5]


def _location_results(nginx_http: str, client_s: float = 1) -> dict[str, dict]:
    dump = textwrap.dedent(f"""\
        nginx: configuration file /etc/nginx/nginx.conf test is successful
        # configuration file /etc/nginx/nginx.conf:
        http {{
            {nginx_http}
            server {{ listen 80; location ~ \\.php$ {{ fastcgi_pass unix:/run/php.sock; }} }}
        }}
        """)
    profile = dict(API, client_timeout_s=client_s)
    facts = {"nginx": parse_nginx(dump, 0, cpus=2), "php_fpm": {"present": False}}
    results = _filter_evaluate(facts, CATALOG, profile, "web1", derive(profile, FACTS))
    return {r["check"]: r for r in results}


@pytest.mark.parametrize("http, status", [
    # what harden writes for a 1 s client: nginx gives up at 800 ms, before the client
    ("fastcgi_connect_timeout 100ms; fastcgi_send_timeout 800ms; fastcgi_read_timeout 800ms;", "pass"),
    ("fastcgi_connect_timeout 100ms; fastcgi_send_timeout 800ms; fastcgi_read_timeout 1s;", "fail"),
    ("fastcgi_connect_timeout 100ms; fastcgi_send_timeout 800ms; fastcgi_read_timeout 2m;", "fail"),
    ("fastcgi_connect_timeout 100ms; fastcgi_send_timeout 800ms; fastcgi_read_timeout 300ms;", "fail"),  # = p99
    ("fastcgi_connect_timeout 1s; fastcgi_send_timeout 800ms; fastcgi_read_timeout 800ms;", "fail"),
])
def test_the_location_check_judges_millisecond_timeouts_from_nginx_t(http, status):
    result = _location_results(http)["location-timeouts"]
    assert result["status"] == status, result
    if status == "pass":
        assert "0.1s/0.8s/0.8s" in result["observed"]


@pytest.mark.parametrize("terminate, client_s, status", [
    (1, 1, "pass"),      # read 800 ms, rounded up: the model's own value
    (2, 1, "warn"),      # outlives the client by a second
    (9, 10, "pass"), (10, 10, "warn"),   # whole seconds: below the client, as before
])
def test_the_terminate_check_allows_the_read_timeout_rounded_up_and_no_more(terminate, client_s, status):
    profile = dict(API, client_timeout_s=client_s)
    facts = {"nginx": {"present": False}, "php_fpm": {"present": True, "masters": [], "pools": [
        {"label": "pool www", "request_terminate_timeout": terminate}]}}
    results = _filter_evaluate(facts, CATALOG, profile, "web1", derive(profile, FACTS))
    found = next(r for r in results if r["check"] == "fpm-request-terminate")
    assert found["status"] == status, found


def test_the_cli_refuses_a_client_timeout_too_short_in_one_line_naming_the_field(tmp_path: Path):
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "hosts.yml").write_text("all:\n  children:\n    web:\n      hosts:\n        w1:\n")
    (tmp_path / "group_vars/web.yml").write_text(textwrap.dedent("""\
        opsctl_event:
          peak_qps: 100
          request_time: {typical_ms: 20, p99_ms: 50}
          client_timeout_s: 0.3
          php_worker_memory_mb: 32
        """))
    proc = opsctl("harden", "--inventory", str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "group_vars/web.yml" in lines[0] and "opsctl_event.client_timeout_s: 0.3 s is too short" in lines[0]
    assert "= 350 ms" in lines[0]
