"""`opsctl report`'s error-log events against synthetic nginx error logs and php-fpm error and
slow logs whose events the generator counted: per minute x kind x subject x detail, the host's
local time (a zone that is not UTC) read on the host, rotated and gzipped siblings, the window's
edges, unreadable lines counted; the php-fpm logs found from the probe's own -tt; the roll-ups,
findings in numbers and Markdown."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import timedelta, timezone

from ansible_collections.opsctl.fleet.plugins.plugin_utils import log_profile

from opsctl import event_report
from opsctl.event_report_view import markdown
from opsctl.host_logs import HostFigures
from tests.logsynth import error_logs, fpm_error, nginx_error, slow_entry

START = 1_796_000_000 - 1_796_000_000 % 60   # a whole minute (UTC)
OPTS = event_report.ReportOptions(since=START, until=START + 300, rate_mb=64)
# The hosts' zone in these tests: +05:30 (the half hour shows a conversion that only shifted hours).
ZONE = timezone(timedelta(hours=5, minutes=30))
TZ = "IST-5:30"   # the same zone as POSIX TZ (the sign is west of UTC)


def host_run(tmp_path, opts: event_report.ReportOptions = OPTS, tz: str = TZ, **logs: list[str]) -> dict:
    """The script opsctl sends, run here as a host in zone TZ runs it, on LOGS (reader name ->
    lines, written to files of that name)."""
    access = tmp_path / "access.log"
    access.write_text("")
    paths = {}
    for name, lines in logs.items():
        (tmp_path / name).write_text("\n".join(lines) + "\n")
        paths[name] = [str(tmp_path / name)]
    proc = subprocess.run([sys.executable, "-"], input=event_report.host_script(opts, (str(access),), paths),
                          capture_output=True, timeout=120, check=True, env={**os.environ, "TZ": tz})
    return json.loads(proc.stdout)


def rows(data: dict) -> Counter:
    return Counter({(m, k, s, d): n for m, k, s, d, n in data["events"]["rows"]})


def test_events_per_minute_kind_and_subject_equal_the_lines_in_local_time(tmp_path):
    synth = error_logs(START, ZONE)
    data = host_run(tmp_path, nginx=synth.nginx, fpm=synth.fpm, slow=synth.slow)
    assert rows(data) == synth.expected
    ev = data["events"]
    assert ev["in_window"] == sum(synth.expected.values()) and ev["unreadable"] == synth.unreadable
    assert ev["lines"] == len(synth.nginx) + len(synth.fpm) + len(synth.slow)
    # read in UTC, the same lines land 5.5 hours later: the zone is the host's, applied on the host
    assert rows(host_run(tmp_path, tz="UTC", nginx=synth.nginx)) == Counter()


def test_rotated_and_gzipped_siblings_are_read_each_once(tmp_path):
    synth = error_logs(START, ZONE, seed=4)
    third = len(synth.nginx) // 3
    with gzip.open(tmp_path / "nginx.2.gz", "wt") as f:
        f.write("\n".join(synth.nginx[:third]) + "\n")
    (tmp_path / "nginx.1").write_text("\n".join(synth.nginx[third:2 * third]) + "\n")
    os.utime(tmp_path / "nginx.2.gz", (START + 3600, START + 3600))
    os.utime(tmp_path / "nginx.1", (START + 3700, START + 3700))
    data = host_run(tmp_path, nginx=synth.nginx[2 * third:])
    assert rows(data) == Counter({k: n for k, n in synth.expected.items() if k[1] in NGINX})
    assert [os.path.basename(f["path"]) for f in data["events"]["files"]] == ["nginx.2.gz", "nginx.1", "nginx"]


NGINX = ("upstream_timed_out", "upstream_backlog_full", "upstream_connect_failed", "no_live_upstreams", "upstream_closed",
         "upstream_disabled", "worker_connections", "open_files", "shed")


def test_the_window_keeps_since_and_leaves_until_out(tmp_path):
    at = [START - 1, START, START + 59, START + 60, START + 119, START + 120]
    lines = [nginx_error(t, ZONE, "upstream_disabled", "10.0.0.3:80") for t in at]
    fpm = [fpm_error(t, ZONE, "max_children", "www", "5") for t in at]
    slow = [line for t in at for line in slow_entry(t, ZONE, "www", "/var/www/slow.php")]
    opts = event_report.ReportOptions(since=START, until=START + 120, rate_mb=64)
    got = rows(host_run(tmp_path, opts, nginx=lines, fpm=fpm, slow=slow))
    assert got == Counter({(START, "upstream_disabled", "10.0.0.3:80", "shop.test"): 2,
                           (START + 60, "upstream_disabled", "10.0.0.3:80", "shop.test"): 2,
                           (START, "max_children", "www", "5"): 2, (START + 60, "max_children", "www", "5"): 2,
                           (START, "slowlog", "www", "/var/www/slow.php"): 2,
                           (START + 60, "slowlog", "www", "/var/www/slow.php"): 2})


def test_the_php_fpm_logs_are_found_by_the_probes_own_tt(tmp_path, monkeypatch):
    """Two masters (a source build and a panel's PHP 7.4): each one's error_log and its pools'
    slowlog, from the -tt text the probe prints; pools named with their master's version."""
    for name in ("a-error.log", "b-error.log"):
        (tmp_path / name).write_text(fpm_error(START + 5, ZONE, "max_children", "www", "5") + "\n")
    (tmp_path / "www-slow.log").write_text("\n".join(slow_entry(START + 5, ZONE, "www", "/srv/x.php")) + "\n")
    tt = ""
    for version, error_log, slow in (("8.2", "a-error.log", "www-slow.log"), ("7.4", "b-error.log", "undefined")):
        tt += (f"### master running 20 /opt/php{version}/sbin/php-fpm /opt/php{version}/etc/php-fpm.conf\n"
               f"PHP {version}.1 (fpm-fcgi)\n[01-Jan-2026 00:00:00] NOTICE: [global]\n"
               f"[01-Jan-2026 00:00:00] NOTICE: \terror_log = {tmp_path / error_log}\n"
               f"[01-Jan-2026 00:00:00] NOTICE: [www]\n"
               f"[01-Jan-2026 00:00:00] NOTICE: \tslowlog = {tmp_path / slow if slow != 'undefined' else slow}\n"
               "### rc 0\n")
    probe = "cat <<'JSON'\n" + json.dumps({"probe": 1, "sections": {"php_fpm_tt": {"out": tt, "rc": 0}}}) + "\nJSON\n"
    params = {"since": START, "until": START + 60, "fpm_probe": probe}
    from ansible_collections.opsctl.fleet.plugins.plugin_utils import error_log, log_report

    sources = log_report.event_sources(params, [], log_profile, error_log)
    assert [(type(r).__name__, r.label, [os.path.basename(p) for p in paths]) for r, paths in sources] == [
        ("NginxErrors", "", []), ("FpmErrors", "php-fpm 8.2", ["a-error.log"]),
        ("SlowLog", "php-fpm 8.2", ["www-slow.log"]), ("FpmErrors", "php-fpm 7.4", ["b-error.log"]),
        ("SlowLog", "php-fpm 7.4", [])]
    monkeypatch.setenv("TZ", TZ)   # this process stands for the host: its zone is the logs' zone
    time.tzset()
    try:
        got = log_report.read_events(params, [], log_profile.Throttle(0), log_profile, error_log)["events"]
    finally:
        monkeypatch.undo()
        time.tzset()
    assert {tuple(r) for r in got["rows"]} == {(START, "max_children", "www (php-fpm 8.2)", "5", 1),
                                              (START, "max_children", "www (php-fpm 7.4)", "5", 1),
                                              (START, "slowlog", "www (php-fpm 8.2)", "/srv/x.php", 1)}


def test_the_host_header_reads_as_the_access_logs_host():
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.error_log import host_name, upstream_address

    assert [host_name(h) for h in ("Shop.Test:8081", "10.0.0.1", "[::1]:80", "[::1]")] == [
        "shop.test", "10.0.0.1", "[::1]", "[::1]"]
    assert [upstream_address(u) for u in ("http://10.0.0.3:80/x?q=1", "fastcgi://unix:/run/php/fpm.sock:",
                                          "http://unix:/tmp/a.sock:/x", "http://backend/x")] == [
        "10.0.0.3:80", "unix:/run/php/fpm.sock", "unix:/tmp/a.sock", "backend"]


def test_error_logs_of_nginx_T_and_the_built_in_default(tmp_path):
    config = ("error_log /var/log/nginx/error.log warn;\nhttp {\n  error_log logs/http.log;\n"
              "  server { error_log stderr; error_log memory:32m; error_log syslog:server=1.2.3.4; }\n"
              "  # error_log /old.log;\n  access_log /var/log/nginx/access.log;\n}\n")
    assert log_profile.named_logs(config, "/usr/local/nginx", "error_log") == [
        "/var/log/nginx/error.log", "/usr/local/nginx/logs/http.log"]
    # none named: the one nginx was built with, relative to its prefix, with its rotations
    (tmp_path / "logs").mkdir()
    for name in ("error.log", "error.log.1"):
        (tmp_path / "logs" / name).write_text("")
    built = f"configure arguments: --prefix={tmp_path} --error-log-path=logs/error.log"
    assert log_profile.error_logs([("http { }", str(tmp_path), built)]) == [
        str(tmp_path / "logs/error.log.1"), str(tmp_path / "logs/error.log")]
    named = f"error_log {tmp_path}/logs/error.log.1;"
    assert log_profile.error_logs([(named, str(tmp_path), built)]) == [str(tmp_path / "logs/error.log.1")]


def _figures(host: str, event_rows: list) -> HostFigures:
    data = {"counts": [], "request_ms": [], "upstream_ms": [], "lines": 0, "in_window": 0, "unreadable": 0,
            "files": [], "errors": [], "elapsed_s": 0, "throttled_s": 0,
            "events": {"rows": event_rows, "lines": 99, "in_window": 0, "unreadable": 2,
                       "files": [{"path": "/var/log/nginx/error.log", "read": True}], "errors": []}}
    return HostFigures(host, True, data=data)


def test_rollups_findings_and_markdown_state_the_events_in_numbers():
    web = [[START + 60 * i, "max_children", "www", "5", n] for i, n in enumerate((20, 15, 6))]
    web += [[START + 60, "slowlog", "www", "/var/www/slow.php", 7], [START + 60, "slowlog", "www", "/var/www/a.php", 2]]
    lb = [[START + 60 * i, "upstream_disabled", "10.213.5.3:80", "shop.test", 4] for i in range(3)]
    lb += [[START, "upstream_timed_out", "10.213.5.3:80", "api.test", 9]]
    web += [[START + 120, "upstream_backlog_full", "unix:/run/php/php8.2-fpm.sock", "shop.test", 31]]
    result = event_report.build([_figures("web1", web), _figures("lb1", lb),
                                 HostFigures("web2", False, error="unreachable")], OPTS, "lab")
    at = event_report.clock
    assert (f"web1: php-fpm pool www reached pm.max_children (5) in 3 minute(s) between {at(START)} and "
            f"{at(START + 180)}, 41 warning(s)") in result["findings"]
    assert (f"lb1: nginx marked 10.213.5.3:80 failed 12 time(s) in 3 minute(s) between {at(START)} and "
            f"{at(START + 180)}") in result["findings"]
    assert (f"web1: php-fpm pool www traced 9 slow request(s) into its slow log in 1 minute(s) between "
            f"{at(START + 60)} and {at(START + 120)}; most: /var/www/slow.php (7)") in result["findings"]
    assert (f"web1: the listen backlog of unix:/run/php/php8.2-fpm.sock was full (connect() failed, 11) 31 time(s) "
            f"in 1 minute(s) between {at(START + 120)} and {at(START + 180)}") in result["findings"]
    ev = result["events"]
    assert ev["subjects"]["10.213.5.3:80"] == {"upstream_disabled": 12, "upstream_timed_out": 9}
    assert [m["counts"] for m in ev["minutes"]][0] == {"max_children": 20, "upstream_disabled": 4,
                                                       "upstream_timed_out": 9}
    assert [r["host"] for r in ev["read"]] == ["web1", "lb1"] and ev["read"][0]["unreadable"] == 2
    text = markdown(result)
    assert "## Error-log events" in text and "| lb1 | nginx marked the upstream failed (temporarily disabled) | " \
        f"10.213.5.3:80 | 12 | 3 | {at(START)} | {at(START + 120)} |" in text
    assert f"| {at(START + 60)} | web1 | php-fpm slow-log entry | www | /var/www/slow.php | 7 |" in text
    # none: said so, not an empty table
    quiet = markdown(event_report.build([_figures("web1", [])], OPTS))
    assert "No upstream failures in nginx's error logs" in quiet
