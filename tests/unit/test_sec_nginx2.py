"""Bad input in what nginx prints (`nginx -T`) and in the balancer drivers: bounded, refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from opsctl.checks.run import EventOverride, HostOutcome, _evaluate_host, load_checks
from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import MAX_NGINX_DEPTH, MAX_NGINX_STATEMENTS, parse_nginx
from opsctl.sshexec import ExecResult

from tests.unit.test_check_facts import NGINX_T, run_probe_here
from tests.unit.test_harden_role_filters import conf
from tests.unit.test_sec_probe import HOST

REPO = Path(__file__).resolve().parents[2]


def _dump(files: dict[str, str]) -> str:
    return "nginx: configuration file /etc/nginx/nginx.conf test is successful\n" + "\n".join(
        f"# configuration file {name}:\n{text}" for name, text in files.items())


def _fan_out(levels: int, width: int) -> str:
    """nginx.conf includes `width` files, each of which includes the `width` files of the next level."""
    files = {"/etc/nginx/nginx.conf": "events { }\nhttp { include /etc/nginx/l0/*.conf; }"}
    for level in range(levels):
        for i in range(width):
            files[f"/etc/nginx/l{level}/{i}.conf"] = (f"include /etc/nginx/l{level + 1}/*.conf;" if level + 1 < levels
                                                     else "server { listen 80; location / { proxy_pass http://a; } }")
    return _dump(files)


def _deep(levels: int) -> str:
    return _dump({"/etc/nginx/nginx.conf": "http { server { listen 80; " + "location / { " * levels
                  + "proxy_pass http://a; " + "}" * levels + " } }"})


def _timed(text: str) -> tuple[str, float]:
    started = time.monotonic()
    try:
        parse_nginx(text, 0, cpus=2)
        outcome = "parsed"
    except ValueError as exc:
        outcome = str(exc)
    return outcome, time.monotonic() - started


# --- 1. nginx -T: bounded work and depth ---------------------------------------------------------

@pytest.mark.parametrize("text,refused", [
    (_fan_out(levels=8, width=8), True),                                   # 8^8 = 16.7 million servers
    (_dump({"/etc/nginx/nginx.conf": "http {\n" + "server { listen 80; }\n" * 300_000 + "}"}), True),
    (_dump({"/etc/nginx/nginx.conf": "http { include /etc/nginx/nginx.conf; }"}), False),   # itself, 10 deep
], ids=["include-fan-out", "300k-blocks", "self-include"])
def test_a_huge_nginx_configuration_is_refused_quickly(text, refused):
    outcome, seconds = _timed(text)
    if refused:
        assert outcome.startswith("nginx configuration too large to read: more than "), outcome
    assert "\n" not in outcome and seconds < 10, (outcome, seconds)


def test_the_fan_out_names_the_cap():
    outcome, _ = _timed(_fan_out(levels=8, width=8))
    assert outcome == (f"nginx configuration too large to read: more than {MAX_NGINX_STATEMENTS} "
                       "blocks and directives (includes expanded)")


@pytest.mark.parametrize("levels", [5000, 100_000])
def test_deeply_nested_blocks_are_refused_not_a_recursion_error(levels):
    outcome, seconds = _timed(_deep(levels))
    assert outcome == f"nginx configuration nested too deep to read: more than {MAX_NGINX_DEPTH} levels of blocks"
    assert seconds < 10


def test_depth_reached_through_includes_is_bounded_too():
    """Each include adds the included file's nesting to the includer's: the expanded tree is what is walked."""
    inner = "location / { " * 40 + "proxy_pass http://a; " + "}" * 40
    files = {"/etc/nginx/nginx.conf": "http { server { " + inner.replace("proxy_pass http://a;", "include /etc/nginx/a.conf;")
             + " } }", "/etc/nginx/a.conf": inner.replace("proxy_pass http://a;", "include /etc/nginx/b.conf;"),
             "/etc/nginx/b.conf": inner}
    outcome, _ = _timed(_dump(files))
    assert outcome.startswith("nginx configuration nested too deep to read"), outcome


def test_ordinary_configurations_still_parse_within_the_caps():
    nested = _deep(MAX_NGINX_DEPTH - 3)   # http and server are two of the levels
    [innermost] = parse_nginx(nested, 0, cpus=1)["locations"]
    assert innermost["location"].count("/") == MAX_NGINX_DEPTH - 3
    many = _fan_out(levels=2, width=40)   # 1600 servers
    assert len(parse_nginx(many, 0, cpus=1)["listens"]) == 1600
    assert parse_nginx(NGINX_T, 0, cpus=2)["locations"]


@pytest.fixture(scope="module")
def engine():
    return load_checks()[0]


def test_in_check_a_huge_config_is_that_hosts_error_and_other_hosts_are_served(engine):
    real = run_probe_here()
    good, bad = json.loads(json.dumps(real)), json.loads(json.dumps(real))
    good["sections"]["nginx_T"] = {"rc": 0, "out": NGINX_T}
    bad["sections"]["nginx_T"] = {"rc": 0, "out": _fan_out(levels=8, width=8)}
    outcomes = {}
    for name, report in (("web1", bad), ("web2", good)):
        outcome = HostOutcome(name, HOST.address, "ok")
        results = _evaluate_host(HOST, ExecResult(name, True, json.dumps(report)), engine, EventOverride(), outcome)
        outcomes[name] = (outcome, {r.check: r for r in results})
    bad_outcome, bad_results = outcomes["web1"]
    assert bad_outcome.status == "ok" and "clock-sync" in bad_results   # the host's other checks still run
    sections = bad_results["probe-sections"]
    assert sections.status == "warn"
    assert "nginx: ValueError: nginx configuration too large to read: more than" in sections.observed
    good_outcome, good_results = outcomes["web2"]
    assert good_outcome.status == "ok" and "nginx" not in good_results["probe-sections"].observed
    assert {"location-timeouts", "upstream-failover", "nginx-rlimit-config"} <= set(good_results)


def test_many_distinct_include_globs_over_many_files_are_bounded():
    files = {"/etc/nginx/nginx.conf": "http { " + "".join(f"include /etc/nginx/x{i}/*.conf; " for i in range(40_000))
             + "}"}
    files.update({f"/etc/nginx/f{i}.conf": "" for i in range(40_000)})
    outcome, seconds = _timed(_dump(files))
    assert outcome.startswith("nginx configuration too large to read"), outcome
    assert seconds < 10


# --- 1b. the nginx role's in-place editor on the files it manages ----------------------------------

def test_the_role_edits_a_site_of_many_servers_in_linear_time():
    """It took 25 s for 20 000 servers (each server's lines searched again): one pass now."""
    site = "server {\n listen 80;\n location / { proxy_pass http://a; }\n}\n" * 40_000
    started = time.monotonic()
    out = conf.site_set(site, 511, "/etc/nginx/shed.conf", {"max_fails": 3}, {})
    assert time.monotonic() - started < 5
    assert out.count("include /etc/nginx/shed.conf;") == 40_000 and out.count("backlog=511") == 1


def test_the_role_refuses_a_file_too_large_to_edit_in_one_line():
    huge = "http {\n" + "server { listen 80; }\n" * (conf.MAX_LINES + 1) + "}\n"
    for edit in (lambda: conf.site_set(huge, 511, "/x.conf", {}, {}), lambda: conf.main_set(huge, {"worker_processes": 2}, {}, {}),
                 lambda: conf.http_has(huge, ["keepalive_timeout"])):
        with pytest.raises(ValueError) as caught:
            edit()
        assert str(caught.value) == f"nginx configuration too large to read: more than {conf.MAX_LINES} lines"


def test_the_role_reads_deep_nesting_without_recursion():
    site = "server {\n listen 80;\n" + "location / {\n" * 5000 + "}\n" * 5000 + "}\n"
    assert "include /x.conf;" in conf.site_set(site, 511, "/x.conf", {}, {})


# --- 2. the nginx role's time parser ------------------------------------------------------------

HUGE = "9" * 5000 + "s"


@pytest.mark.parametrize("value", [HUGE, "99999999999d", "1" + "0" * 400 + "ms", "9" * 5000])
def test_an_absurd_nginx_time_is_out_of_range_in_one_short_line(value):
    with pytest.raises(ValueError) as caught:
        conf.seconds(value)
    message = str(caught.value)
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "…"
    assert message == f"an nginx time must be at most 3650d, got {shown}"
    assert len(message) < 120 and "\n" not in message


@pytest.mark.parametrize("value", ["abc", "", "5x", "1.5s", "-1s", "٣s"])
def test_a_value_that_is_no_nginx_time_is_refused(value):
    with pytest.raises(ValueError, match="is not an nginx time such as 60s, 1m30s or 500ms"):
        conf.seconds(value)


@pytest.mark.parametrize("value,expected", [("60", 60), ("60s", 60), ("500ms", 0.5), ("1m30s", 90), ("2h", 7200),
                                            ("1d", 86400), ("3650d", 3650 * 86400)])
def test_nginx_times_still_read(value, expected):
    assert conf.seconds(value) == expected


def test_the_role_reads_nginx_times_with_opsctl_durations_rule():
    """One rule: the role's filter reads nginx times with plugin_utils/durations.py, not a parser of its own."""
    from ansible_collections.opsctl.fleet.plugins.plugin_utils import durations
    assert conf.seconds is durations.nginx_seconds
    assert durations.nginx_seconds("1m30s") == 90
    with pytest.raises(ValueError) as caught:
        durations.parse_duration(HUGE)
    assert len(str(caught.value)) < 140   # the inventory's durations are not echoed whole either


def test_a_huge_timeout_in_an_unmanaged_file_is_reported_shortened():
    dump = ("# configuration file /etc/nginx/sites-enabled/other:\n"
            f"    proxy_read_timeout {HUGE};\n    proxy_send_timeout 5s;\n    proxy_connect_timeout 1h;\n")
    found = conf.timeout_overrides(dump, {"proxy_read_timeout": 10, "proxy_connect_timeout": 10,
                                          "proxy_send_timeout": 10}, [])
    assert found == [f"/etc/nginx/sites-enabled/other: proxy_read_timeout {HUGE[:60]}… (more than 3650d)",
                     "/etc/nginx/sites-enabled/other: proxy_connect_timeout 1h"]


@pytest.mark.parametrize("args", [["--duration", HUGE], ["--event", "2026-11-11T00:00" + "9" * 5000]])
def test_a_5000_digit_option_to_check_is_refused_without_echoing_it(args, tmp_path):
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[web]\nweb1 ansible_host=127.0.0.1\n")
    done = subprocess.run([sys.executable, "-m", "opsctl", "check", "-i", str(inventory), *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and done.stderr.startswith("opsctl: error: "), done.stderr[-300:]
    assert len(done.stderr) < 250 and done.stderr.count("\n") == 1 and "…" in done.stderr, done.stderr[:300]


# --- 3. balancer types: plain driver names the drain role ships -----------------------------------

from tests.unit.test_sec_input import _inventory, _one_line_error  # noqa: E402
from tests.conftest import opsctl  # noqa: E402

BAD_TYPES = ["../../x", "main", "nginx/../nginx", "Nginx", "nginx.yml", "f5", "/etc/passwd", "9" * 5000]


@pytest.mark.parametrize("kind", BAD_TYPES)
def test_a_balancer_type_that_is_no_shipped_driver_is_refused_at_inventory_load(tmp_path, kind):
    inv = _inventory(tmp_path, f"opsctl_balancers: [{{host: lb1, type: {json.dumps(kind)}, upstream: app}}]\n")
    for args in (("reload", "php-fpm", "--rolling", "--check"), ("inventory",)):
        proc = opsctl(*args, "-i", str(inv))
        _one_line_error(proc, "host web1: opsctl_balancers[0].type: ", "is not a balancer driver (known: nginx, haproxy, command)")
        assert len(proc.stderr) < 250, proc.stderr[:300]


def test_the_cli_the_role_and_its_argument_spec_know_the_same_drivers():
    """One rule (plugin_utils/balancer_entries.py) for opsctl and the role; the argument spec's
    choices and the driver files the role ships are exactly its drivers."""
    from opsctl.balancers import drivers
    role = REPO / "ansible_collections/opsctl/fleet/roles/opsctl_drain"
    shipped = sorted(p.stem for p in (role / "tasks").glob("*.yml") if p.stem != "main")
    spec = yaml.safe_load((role / "meta/argument_specs.yml").read_text())
    choices = spec["argument_specs"]["main"]["options"]["opsctl_drain_balancers"]["options"]["type"]["choices"]
    assert drivers() == ("nginx", "haproxy", "command") and sorted(drivers()) == shipped == sorted(choices)


ROLES = REPO / "ansible_collections/opsctl/fleet/roles"


def _drain_play(tmp_path: Path, kind: str, validate: bool) -> tuple[subprocess.CompletedProcess, Path]:
    """The drain role under plain ansible-playbook on localhost, with a balancer of type `kind`.

    The type points (by ../) at a task file that touches a marker: a role that builds its
    include path from the type runs it."""
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.yml"
    evil.write_text(f"- name: Planted\n  ansible.builtin.file:\n    path: {marker}\n    state: touch\n    mode: '0600'\n")
    play = tmp_path / "play.yml"
    play.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [{
        "name": "Drain", "ansible.builtin.include_role": {"name": "opsctl.fleet.opsctl_drain", "rolespec_validate": validate},
        "vars": {"opsctl_drain_state": "serving",
                 "opsctl_drain_balancers": [{"host": "localhost", "type": kind, "upstream": "app"}]}}]}]))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(REPO), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "0"}
    proc = subprocess.run([str(Path(sys.executable).with_name("ansible-playbook")), "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(play)], capture_output=True, text=True, timeout=180, env=env,
                          stdin=subprocess.DEVNULL)
    return proc, marker


def _traversal(tmp_path: Path) -> str:
    """A type that climbs from roles/opsctl_drain/tasks/ to tmp_path/evil (.yml added by the role)."""
    up = "../" * len((ROLES / "opsctl_drain" / "tasks").resolve().parts[1:])
    return f"{up}{str(tmp_path / 'evil').lstrip('/')}"


@pytest.mark.parametrize("validate", [True, False], ids=["argument-spec", "role-assert"])
def test_ansible_playbook_on_the_drain_role_refuses_a_path_as_type_before_any_change(tmp_path, validate):
    proc, marker = _drain_play(tmp_path, _traversal(tmp_path), validate)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and not marker.exists(), out[-2000:]
    if validate:
        assert "value of type must be one of: nginx, haproxy, command" in out, out[-2000:]
    else:
        assert "is not a balancer driver (known: nginx, haproxy, command)" in out, out[-2000:]


def test_ansible_playbook_on_the_drain_role_refuses_main_as_type(tmp_path):
    proc, _ = _drain_play(tmp_path, "main", validate=False)
    assert proc.returncode != 0 and "is not a balancer driver (known: nginx, haproxy, command)" in proc.stdout, proc.stdout[-2000:]
