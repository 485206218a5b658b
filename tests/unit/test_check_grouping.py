"""`opsctl check` for a fleet (#14): the same finding on many hosts is one group, host names are
ranges, and the table of 100 hosts fits a terminal (at most 60 lines at 80 and 200 columns)."""

from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest
from rich.console import Console

from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import Result

from opsctl.checks import output
from opsctl.checks.grouped_view import budget, group_rows, plain_line
from opsctl.checks.grouping import (Value, compress_hosts, group_report, host_error, natural_sorted, numeric_range,
                                    summarize)
from opsctl.checks.run import HostOutcome, Report, report_json

from tests.unit.test_sec_input import _inventory, _one_line_error
from tests.conftest import opsctl

WEBS = [f"web{i}" for i in range(1, 100)]
# The stock lab's findings (opsctl lab up --web 99, then opsctl check): check, item, status, failure
# mode, observed, expected, remediation, and which hosts have it.
STOCK = [
    ("nginx-connections", "", "fail", "F7", "worker_connections 768 x 2 workers (worker_processes auto) = 1536 connections",
     ">= 79200 = 2 x declared concurrency 39600",
     "opsctl harden --tags nginx (worker_connections and worker_rlimit_nofile from concurrency)", "lb"),
    ("nginx-rlimit-config", "", "warn", "F6", "worker_rlimit_nofile unset (inherits the service limit)",
     ">= 1536 (2 x worker_connections 768)", "opsctl harden --tags nginx", "all"),
    ("location-timeouts", "_ location /", "fail", "F2",
     "proxy_connect/send/read_timeout = 60s/60s/60s (pass to http://opsctl_web); clients give up after 5.0s, so nginx "
     "logs 499 and never marks the backend failed", "p99 0.3s < proxy_read_timeout < 5.0s; connect and send < 5.0s",
     "opsctl harden --tags nginx (sets every fastcgi_*/proxy_* timeout from the profile)", "lb"),
    ("sysctl-hardened", "net.core.somaxconn", "warn", "F6", "net.core.somaxconn = 4096",
     ">= 9900: 9900 = max(4096 (Linux default), largest listen backlog 9900), at most 65535: the kernel silently caps "
     "every backlog at it", "opsctl harden --tags sysctl", "lb"),
    ("sysctl-hardened", "net.ipv4.tcp_max_syn_backlog", "warn", "F6", "net.ipv4.tcp_max_syn_backlog = 2048",
     ">= 9900: 9900 = somaxconn: half-open connections of a burst are not dropped before they reach the accept queue",
     "opsctl harden --tags sysctl", "lb"),
    ("sysctl-hardened", "net.ipv4.tcp_max_tw_buckets", "warn", "F6", "net.ipv4.tcp_max_tw_buckets = 131072",
     ">= 1188000: 1188000 = max(262144, peak 9900 qps x 2 sockets x 60 s TIME_WAIT = 1188000)",
     "opsctl harden --tags sysctl", "lb"),
    ("clock-sync", "", "warn", "F7", "unknown (none: no timedatectl (systemd), chronyc or ntpq on the host)",
     "synchronised: cron schedules and the event start depend on it", "install and enable chrony (or systemd-timesyncd)",
     "all"),
    ("fpm-backlog-littles-law", "pool www", "fail", "F1",
     "listen.backlog = -1 (follows somaxconn): 4096 connections can queue; at 100.0 qps that is 41.0s of waiting, "
     "longer than clients wait",
     "<= 470 = 100.0 qps x 4.7s (client timeout 5.0s - p99 300.0 ms); opsctl harden sizes it smaller, from the "
     "upstream timeout",
     "opsctl harden --tags php_fpm (sets listen.backlog per pool from the capacity model), then opsctl reload php-fpm "
     "--rolling --restart (a reload does not re-create the socket)", "web"),
    ("fpm-status-page", "", "warn", "F1", "status page not read: no pool has pm.status_path set",
     "pm.status_path (and pm.status_listen on PHP >= 8.0) set, and cgi-fcgi (libfcgi-bin) installed",
     "set pm.status_path = /fpm-status and pm.status_listen = 127.0.0.1:9001 in each pool (opsctl harden --tags "
     "php_fpm); apt-get install libfcgi-bin for a read that bypasses nginx", "web"),
    ("pool-capacity", "pool www", "fail", "F7", "this pool serves 5 / 0.1s = 50 qps; you declared 100.0",
     ">= 10 workers for 100.0 qps",
     "opsctl harden --tags php_fpm (pm.max_children from peak_qps x request time and memory)", "web"),
    ("location-timeouts", "_ location ~ \\.php$", "fail", "F2",
     "fastcgi_connect/send/read_timeout = 60s/60s/60s (pass to unix:/run/php/php8.2-fpm.sock); clients give up after "
     "5.0s, so nginx logs 499 and never marks the backend failed",
     "p99 0.3s < fastcgi_read_timeout < 5.0s; connect and send < 5.0s",
     "opsctl harden --tags nginx (sets every fastcgi_*/proxy_* timeout from the profile)", "web"),
    ("fpm-process-control-timeout", "php-fpm 8.2 /etc/php/8.2/fpm/php-fpm.conf", "fail", "F3",
     "process_control_timeout = 0s: QUIT and USR2 send SIGTERM to busy workers at once",
     ">= 5s (ceil of the client timeout)",
     "opsctl harden --tags lifecycle (sets process_control_timeout in [global]), then opsctl reload php-fpm --rolling",
     "web"),
    ("fpm-request-terminate", "pool www", "warn", "F3", "request_terminate_timeout = 0 (unlimited)",
     "between p99 0.3s and the client timeout 5.0s (= nginx read timeout)", "opsctl harden --tags php_fpm", "web"),
    ("fpm-init-stop", "/etc/init.d/php8.2-fpm", "fail", "F3",
     "/etc/init.d/php8.2-fpm stop sends QUIT/30/TERM/5/KILL/5 but process_control_timeout = 0s, so the master passes "
     "SIGTERM to busy workers at once (FAILURE-MODES F3); restart = stop + start",
     "stop = QUIT/5+ then TERM, and process_control_timeout >= 5s",
     "opsctl harden --tags lifecycle; restart only through opsctl reload php-fpm --rolling --restart (drains first)",
     "web"),
    ("fpm-slowlog", "pool www", "warn", "F5", "request_slowlog_timeout = 0 (unlimited)",
     "set (e.g. the p99 request time) so a stall leaves a trace", "opsctl harden --tags php_fpm", "web"),
    ("sysctl-hardened", "net.ipv4.tcp_max_syn_backlog", "warn", "F6", "net.ipv4.tcp_max_syn_backlog = 2048",
     ">= 4096: 4096 = somaxconn: half-open connections of a burst are not dropped before they reach the accept queue",
     "opsctl harden --tags sysctl", "web"),
    ("sysctl-hardened", "net.ipv4.tcp_max_tw_buckets", "warn", "F6", "net.ipv4.tcp_max_tw_buckets = 131072",
     ">= 262144: 262144 = max(262144, peak 100 qps x 2 sockets x 60 s TIME_WAIT = 12000)",
     "opsctl harden --tags sysctl", "web"),
]
PASSES = ["rotation-in-window", "cron-restart", "disk-free", "swap", "listen-overflows"]


def _result(host: str, check: str, item: str, status: str, mode: str, observed: str, expected: str,
            fix: str) -> Result:
    return Result(host=host, check=check, title=f"title of {check}", severity=status if status != "pass" else "fail",
                  status=status, observed=observed, expected=expected, remediation=fix, failure_mode=mode, item=item)


def stock_report(down: dict[str, str] | None = None) -> Report:
    """lb1 and web1..web99 as the stock lab reports them; DOWN: hosts not checked, with their errors."""
    down = down or {}
    names = ["lb1"] + WEBS
    hosts = [HostOutcome(n, f"10.0.0.{i + 10}", "error" if n in down else "ok", down.get(n, "").format(f"10.0.0.{i + 10}"))
             for i, n in enumerate(names)]
    results = []
    for name in names:
        if name in down:
            continue
        role = "lb" if name == "lb1" else "web"
        results += [_result(name, check, item, status, mode, observed, expected, fix)
                    for check, item, status, mode, observed, expected, fix, on in STOCK if on in (role, "all")]
        results += [_result(name, check, "", "pass", "F4", "fine", "fine", "none") for check in PASSES]
    return Report(hosts=hosts, results=results, fail_on="fail", wall_s=12.5)


def _render(report: Report, width: int, **kwargs) -> str:
    console = Console(file=io.StringIO(), width=width, record=True, force_terminal=True)
    output.print_table(console, report, **kwargs)
    return console.export_text()


def _plain(report: Report, **kwargs) -> list[str]:
    buffer = io.StringIO()
    output.print_table(Console(file=buffer, width=80), report, **kwargs)
    return buffer.getvalue().splitlines()


# --- host names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("names, text", [
    ([f"web{i:02d}" for i in range(1, 99)] + ["web100"], "web[01-98], web100"),
    (WEBS + ["lb2", "lb1"], "lb[1-2], web[1-99]"),
    (["web10", "db", "web9", "cache-a", "web11", "web9"], "cache-a, db, web[9-11]"),
    (["web009", "web010", "web011", "web12"], "web[009-011], web12"),        # the padding is kept
    (["web9", "web010", "web11"], "web9, web010, web11"),                    # and never mixed
    ([f"rack{r}-web{i:02d}" for r in (1, 2) for i in (1, 2, 3)], "rack1-web[01-03], rack2-web[01-03]"),
    (["web1.dc1", "web2.dc1", "web3.dc1", "web1.dc2"], "web[1-3].dc1, web1.dc2"),
    ([f"web{i:02d}.dc{d}" for i in range(1, 41) for d in (1, 2)], "web[01-40].dc1, web[01-40].dc2"),
    (["web1", "web3", "web5"], "web1, web3, web5"),
    (["db-primary"], "db-primary"),
    ([], ""),
])
def test_host_names_are_compressed_into_ranges(names, text):
    assert compress_hosts(names) == text


def test_host_names_sort_naturally():
    assert natural_sorted(["web10", "web9", "lb1", "web1", "web9"]) == ["lb1", "web1", "web9", "web10"]


def test_a_name_of_5000_digits_is_a_name_not_a_crash():
    huge = "web" + "9" * 5000      # int() refuses more than 4300 digits
    assert compress_hosts([huge, "web1", huge + "1", "web2"]) == f"web[1-2], {huge}, {huge}1"


# --- observed values ----------------------------------------------------------------------------

def test_hosts_that_agree_show_their_one_value():
    assert summarize([Value("net.core.somaxconn = 4096", tuple(WEBS))]) == "net.core.somaxconn = 4096"


def test_numbers_that_differ_show_as_a_range():
    values = [Value(f"net.core.somaxconn = {n}", (f"web{i}", f"web{i + 10}")) for i, n in
              enumerate((4096, 128, 65535, 1024), start=1)]
    assert summarize(values) == "net.core.somaxconn = 128..65535"
    assert numeric_range(["timeouts 60s/60s/60s", "timeouts 60s/60s/30s"]) == "timeouts 60s/60s/30s..60s"
    assert numeric_range(["php8.2 runs 5 pools", "php8.2 runs 50 pools"]) == "php8.2 runs 5..50 pools"
    assert numeric_range(["a = 1", "b = 2"]) is None


def test_a_few_outliers_are_named_where_they_differ():
    values = [Value("listen.backlog = -1: 4096 connections can queue", tuple(WEBS[:97])),
              Value("listen.backlog = -1: 65535 connections can queue", ("web98",)),
              Value("listen.backlog = -1: 128 connections can queue", ("web7",))]
    assert summarize(values) == "listen.backlog = -1: 4096 (web98: 65535, web7: 128) connections can queue"
    words = [Value("listen.backlog = -1 (follows somaxconn)", tuple(WEBS[1:])), Value("listen.backlog = 65535", ("web1",))]
    assert summarize(words) == "listen.backlog = -1 (follows somaxconn) on 98 hosts; web1: listen.backlog = 65535"


def test_many_values_in_words_show_the_usual_one_and_a_count():
    values = [Value("cron.daily", tuple(WEBS[:50])), Value("systemd timer", tuple(WEBS[50:90])),
              Value("none", tuple(WEBS[90:]))]
    assert summarize(values) == "cron.daily on 50 hosts, 2 other values on the rest"


# --- groups -------------------------------------------------------------------------------------

def test_the_stock_lab_is_17_groups_errors_then_fails_then_warns():
    groups = group_report(stock_report())
    assert len(groups) == len(STOCK) == 17
    assert [g.status for g in groups] == sorted((g.status for g in groups), key=["error", "fail", "warn"].index)
    backlog = next(g for g in groups if g.check == "fpm-backlog-littles-law")
    assert (backlog.hosts, backlog.observed, compress_hosts(backlog.hosts)) == (WEBS, STOCK[7][4], "web[1-99]")
    clock = next(g for g in groups if g.check == "clock-sync")
    assert compress_hosts(clock.hosts) == "lb1, web[1-99]"
    # The same check and item with another expected value (lb1's larger peak) is its own group.
    syn = [g for g in groups if g.item == "net.ipv4.tcp_max_syn_backlog"]
    assert sorted(len(g.hosts) for g in syn) == [1, 99]
    assert len(group_report(stock_report(), passes=True)) == 17 + len(PASSES)


def test_hosts_not_checked_are_grouped_by_their_error_without_their_address():
    report = stock_report(down={"web3": "unreachable: no answer from root@{}:22 within 5s",
                                "web4": "unreachable: no answer from root@{}:22 within 5s",
                                "web5": "unreachable: no answer from root@{}:22 within 5s",
                                "web60": "host key mismatch: {} offered a ssh-ed25519 key that differs"})
    errors = [g for g in group_report(report) if g.status == "error"]
    assert [(g.observed, compress_hosts(g.hosts)) for g in errors] == [
        ("unreachable: no answer from root@<address>:22 within 5s", "web[3-5]"),
        ("host key mismatch: <address> offered a ssh-ed25519 key that differs", "web60")]
    assert group_report(report)[0].status == "error"
    # 10.0.0.1 is not taken out of 10.0.0.10
    assert host_error(HostOutcome("h", "10.0.0.1", "error", "no route to 10.0.0.10 from 10.0.0.1")) == \
        "no route to 10.0.0.10 from <address>"


# --- the table ----------------------------------------------------------------------------------

def _varied() -> Report:
    """The stock lab with what a real fleet adds: hosts down, odd values on a few, many on others."""
    report = stock_report(down={"web50": "unreachable: no answer from root@{}:22 within 5s",
                                "web51": "unreachable: no answer from root@{}:22 within 5s",
                                "web90": "authentication failed for root@{}:22 with key /root/.ssh/id_ed25519"})
    results = []
    for i, r in enumerate(report.results):
        if r.check == "fpm-backlog-littles-law" and r.host == "web7":
            r = replace(r, observed=r.observed.replace("4096", "65535"))
        if r.item == "net.ipv4.tcp_max_syn_backlog" and r.host != "lb1":
            r = replace(r, observed=f"net.ipv4.tcp_max_syn_backlog = {128 * (i % 9 + 1)}")
        results.append(r)
    return replace(report, results=results)


@pytest.mark.parametrize("report", [stock_report(), _varied()], ids=["stock", "varied"])
@pytest.mark.parametrize("width", [80, 200])
def test_100_hosts_fit_in_60_lines(report, width):
    text = _render(report, width)
    lines = text.splitlines()
    assert len(lines) <= 60, text
    assert all(len(line) <= width for line in lines)
    assert lines[-1].startswith("NOT READY: 100 hosts") or "NOT READY: 100 hosts" in lines[-2]
    for check in {s[0] for s in STOCK}:
        assert check in text
    assert "web[1-99]" in text or "web[1-49]" in text


@pytest.mark.parametrize("width", [80, 200])
def test_no_cell_wraps_into_more_than_three_lines(width):
    b = budget(width)
    for group in group_report(_varied()):
        console = Console(file=io.StringIO(), width=width, record=True, force_terminal=True)
        console.print(group_rows(b, group))
        rendered = console.export_text().splitlines()
        assert len(rendered) <= 3, rendered


def test_a_long_value_is_cut_with_an_ellipsis_not_wrapped_into_a_tower():
    report = stock_report()
    report.results.append(_result("web1", "custom", "", "fail", "F1", "x " * 500, "y " * 300, "z " * 300))
    text = _render(report, 80)
    custom = [line for line in text.splitlines() if "custom" in line]
    block = text.splitlines()[text.splitlines().index(custom[0]):][:3]
    assert any("…" in line for line in block)
    assert len(text.splitlines()) <= 63


def test_the_verdict_stays_last_and_unchanged():
    report = _varied()
    summary = output._summary(report)
    assert summary.startswith("NOT READY: 100 hosts (3 unreachable or failed)")
    assert _plain(report)[-1] == summary
    assert " ".join(_render(report, 200).splitlines()[-1].split()) == summary


def test_piped_output_is_one_plain_line_per_group():
    lines = _plain(_varied())
    groups = group_report(_varied())
    assert len(lines) == len(groups) + 1
    assert lines[:-1] == [plain_line(g) for g in groups]
    assert not any(ch in "\n".join(lines) for ch in "│┃━─┏")
    assert lines[0] == "ERROR host not checked  2 hosts web[50-51]  unreachable: no answer from root@<address>:22 within 5s"
    backlog = next(line for line in lines if "fpm-backlog" in line)
    assert backlog.startswith("FAIL fpm-backlog-littles-law [pool www]  96 hosts web[1-49], web[52-89], web[91-99]  "
                              "observed listen.backlog = -1 (follows somaxconn): 4096 (web7: 65535) connections can "
                              "queue; at 100.0 qps that is 41.0s of waiting")
    assert "  expected <= 470 = 100.0 qps x 4.7s" in backlog and "  fix: opsctl harden --tags php_fpm" in backlog
    assert any("net.ipv4.tcp_max_syn_backlog = 128..1152" in line for line in lines)


def test_hosts_shows_those_hosts_results_and_the_whole_fleets_verdict():
    report = _varied()
    lines = _plain(report, hosts="web7")
    assert lines[-1] == output._summary(report)
    assert {line.split()[1] for line in lines[:-1]} == {"web7"}
    assert len(lines) - 1 == len([r for r in report.results if r.host == "web7" and r.status != "pass"])
    tens = _plain(report, hosts="web1*")
    assert {line.split()[1] for line in tens[:-1]} == {"web1"} | {f"web{i}" for i in range(10, 20)}
    down = _plain(report, hosts="web5?")
    assert any(line.startswith("ERROR web50 (10.0.0.60)") for line in down)
    table = _render(report, 80, hosts="web7")
    assert "findings on web7" in table and "web8" not in table
    assert "findings on web[7]" in _render(report, 120, hosts="web[7]")     # a pattern is text, not markup
    assert _plain(report, hosts="web[/]") == [output._summary(report)]


def test_verbose_adds_passes_and_every_hosts_results():
    report = stock_report()
    lines = _plain(report, verbose=1)
    groups = group_report(report, passes=True)
    assert lines[:len(groups)] == [plain_line(g) for g in groups]
    assert any(line.startswith("PASS disk-free  100 hosts lb1, web[1-99]") for line in lines)
    assert len(lines) == len(groups) + len(report.results) + 1


# --- JSON, Markdown, JUnit ----------------------------------------------------------------------

def test_json_keeps_each_hosts_results_and_adds_the_groups():
    report = _varied()
    data = json.loads(json.dumps(report_json(report)))
    assert data["version"] == 2 and len(data["results"]) == len(report.results)
    assert len(data["groups"]) == len(group_report(report, passes=True))
    backlog = next(g for g in data["groups"] if g["check"] == "fpm-backlog-littles-law")
    assert backlog["host_count"] == 96 and backlog["hosts_compact"] == "web[1-49], web[52-89], web[91-99]"
    assert backlog["values"][1] == {"observed": STOCK[7][4].replace("4096", "65535"), "hosts": ["web7"]}
    assert "(web7: 65535)" in backlog["observed"] and backlog["kind"] == "check" and backlog["severity"] == "fail"
    down = data["groups"][0]
    assert (down["kind"], down["status"], down["hosts"]) == ("host", "error", ["web50", "web51"])


def test_markdown_starts_with_the_groups_and_keeps_each_hosts_rows():
    report = _varied()
    text = output.markdown(report)
    assert text.index("## Findings grouped across hosts") < text.index("## Hosts not checked") < text.index("## Findings\n")
    grouped = text.split("## Findings grouped across hosts")[1].split("## Hosts not checked")[0]
    assert len([line for line in grouped.splitlines() if line.startswith("| ") and "---" not in line]) == \
        len(group_report(report)) + 1
    assert "| fail | fpm-backlog-littles-law pool www | 96: web[1-49], web[52-89], web[91-99] |" in grouped
    assert "| fail | web7 | fpm-backlog-littles-law pool www | F1 |" in text


def test_junit_keeps_one_suite_per_host_and_prints_the_groups_first():
    report = _varied()
    root = ET.fromstring(output.junit(report))
    suites = root.findall("testsuite")
    assert suites[0].get("name") == output.GROUPED_SUITE and suites[0].get("tests") == "0"
    assert suites[0].find("system-out").text.splitlines() == [plain_line(g) for g in group_report(report)]
    assert [s.get("name") for s in suites[1:]] == ["lb1"] + WEBS


def test_hosts_that_names_no_host_is_refused_before_anything_connects(tmp_path):
    _one_line_error(opsctl("check", "-i", str(_inventory(tmp_path)), "--hosts", "web7*"),
                    "--hosts 'web7*': no host of the inventory matches (its hosts: lb1, web1)")


def test_long_items_and_hostile_names_stay_on_their_lines():
    report = stock_report()
    report.results.append(_result("web1", "c", "item\nwith a newline", "fail", "F1", "a\nb", "e", "f"))
    line = next(line for line in _plain(report) if line.startswith("FAIL c "))
    assert "item with a newline" in line and "observed a b" in line
    assert re.search(r"^FAIL c \[item with a newline\]  1 host web1  observed a b  expected e  fix: f$", line)
