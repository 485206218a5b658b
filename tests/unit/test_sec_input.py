"""Bad input never costs a traceback: each is one line, exit 2, before anything connects (#11)."""

from __future__ import annotations

import random
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import CapacityError, derive
from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import CatalogError, load_catalog
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import parse_duration

from opsctl.errors import OpsctlError
from opsctl.profile import ProfileError, parse_profile
from opsctl.rolling import batch_size

from tests.conftest import opsctl

EVENT = {"peak_qps": 100, "request_time": {"typical_ms": 100, "p99_ms": 300}, "client_timeout_s": 5,
         "php_worker_memory_mb": 40}
FACTS = {"cpus": 2, "memory_mb": 4096, "php_version": "8.2", "host": "web1", "nofile_max": 1048576}


def _inventory(tmp_path: Path, web_vars: str = "") -> Path:
    (tmp_path / "group_vars").mkdir(parents=True)
    (tmp_path / "hosts.yml").write_text(textwrap.dedent("""\
        all:
          children:
            web:
              hosts:
                web1: {ansible_host: 127.0.0.1}
            lb:
              hosts:
                lb1: {ansible_host: 127.0.0.1}
        """))
    (tmp_path / "group_vars" / "web.yml").write_text(web_vars)
    return tmp_path


def _one_line_error(proc, *needles: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsctl: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("value", ["99999999999d", 1.0e300, "1.0e+300", float("inf"), float("nan"), -1, "3651d"])
def test_durations_out_of_range_are_value_errors(value):
    with pytest.raises(ValueError):
        parse_duration(value)


def test_the_duration_bound_still_takes_real_durations():
    assert parse_duration("3650d") == timedelta(days=3650)
    assert parse_duration("1h30m") == timedelta(minutes=90)


@pytest.mark.parametrize("duration", ["99999999999d", 1.0e300])
def test_a_huge_event_duration_is_a_profile_error(duration):
    event = dict(EVENT, window={"start": "2026-11-11T00:00", "duration": duration, "timezone": "UTC"})
    with pytest.raises(ProfileError, match="duration"):
        parse_profile(event)


def test_check_duration_option_out_of_range_is_one_line(tmp_path):
    _one_line_error(opsctl("check", "-i", str(_inventory(tmp_path)), "--duration", "99999999999d"),
                    "--duration")


@pytest.mark.parametrize("value", ["²", "٣", "1e3", "-4", "12.5", True, "9" * 40])
def test_capacity_overrides_that_are_not_ascii_whole_numbers_are_refused(value):
    with pytest.raises(CapacityError, match="whole number"):
        derive(EVENT, FACTS, {"php_fpm.pm_max_children": value})


@pytest.mark.parametrize("spec", ["1e999%", "1e999", "inf", "nan%", "0", "0%", "101%", "-1", "", "2 hosts", "½"])
def test_batch_specs_that_are_not_a_count_or_percentage_are_usage_errors(spec):
    with pytest.raises(OpsctlError, match="--batch"):
        batch_size(spec, 10)


@pytest.mark.parametrize("spec,count,size", [("1", 3, 1), ("2", 3, 2), ("50%", 3, 2), ("100%", 3, 3),
                                             ("25%", 1, 1), ("10", 3, 3), ("0.5%", 10, 1)])
def test_batch_specs_that_are_fine(spec, count, size):
    assert batch_size(spec, count) == size


def test_reload_batch_overflow_is_one_line(tmp_path):
    _one_line_error(opsctl("reload", "php-fpm", "--rolling", "--check", "--batch", "1e999%",
                           "-i", str(_inventory(tmp_path))), "--batch")


@pytest.mark.parametrize("balancers,needle", [
    ("[lb1]", "opsctl_balancers[0]"),
    ("lb1", "expected a list"),
    ("[{host: lb1, type: nginx}]", "'upstream'"),
    ("[{host: lb1, type: nginx, upstream: u, weight: 3}]", "unknown key 'weight'"),
    ("[{host: [lb1], type: nginx, upstream: u}]", "'host'"),
])
def test_malformed_balancers_are_one_line_naming_the_host(tmp_path, balancers, needle):
    inv = _inventory(tmp_path, f"opsctl_balancers: {balancers}\n")
    for args in (("reload", "php-fpm", "--rolling", "--check"), ("logrotate", "plan"), ("inventory",)):
        _one_line_error(opsctl(*args, "-i", str(inv)), "web1", needle)


def test_catalog_that_is_a_binary_file_is_one_line(tmp_path):
    binary = tmp_path / "catalog.yml"
    binary.write_bytes(bytes(range(256)) * 4)
    (tmp_path / "inv").mkdir()
    _one_line_error(opsctl("check", "-i", str(_inventory(tmp_path / "inv")), "--catalog", str(binary)),
                    "--catalog", "not a text file")


@pytest.mark.parametrize("entry,needle", [
    ({"facts": 5}, "facts must be a list"),
    ({"facts": [1, 2]}, "facts must be a list"),
    ({"rule": {"a": 1}}, "rule must be text"),
    ({"observed": ["x"]}, "observed must be text"),
])
def test_catalog_checks_of_the_wrong_shape_are_catalog_errors(entry, needle):
    check = {"id": "x", "title": "t", "severity": "warn", "failure_mode": "F1", "facts": ["host"],
             "rule": "true", "observed": "o", "expected": "e", "remediation": "r", **entry}
    import yaml
    with pytest.raises(CatalogError, match=needle):
        load_catalog([("user.yml", yaml.safe_dump({"checks": [check]}))])


def _random_value(rng: random.Random, depth: int = 0):
    kinds = ["int", "float", "str", "bool", "none", "list", "dict", "big", "unicode"]
    kind = rng.choice(kinds if depth < 2 else kinds[:5])
    return {"int": lambda: rng.randint(-10**6, 10**6), "float": lambda: rng.choice([1e308, -0.0, 1e-300, 3.5]),
            "str": lambda: rng.choice(["", "2h", "abc", "04:00", "1e999", "Asia/Shanghai", "../../etc/passwd",
                                       "2026-11-11T00:00", "9999-12-31T23:59", "0001-01-01T00:00"]),
            "bool": lambda: rng.random() < 0.5, "none": lambda: None,
            "list": lambda: [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))],
            "dict": lambda: {str(rng.randint(0, 3)): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))},
            "big": lambda: 10 ** 400, "unicode": lambda: rng.choice(["²", "٣", "\x00", "\x1b[2J"])}[kind]()


def test_fuzzed_event_profiles_raise_only_profile_errors():
    rng = random.Random(11)
    keys = ["peak_qps", "concurrency", "client_timeout_s", "php_worker_memory_mb", "name"]
    window_keys = ["start", "duration", "timezone", "prepare"]
    for _ in range(3000):
        event = dict(EVENT, request_time=dict(EVENT["request_time"]))
        for key in rng.sample(keys, rng.randint(1, 2)):
            event[key] = _random_value(rng)
        if rng.random() < 0.3:
            event["request_time"][rng.choice(["typical_ms", "p99_ms"])] = _random_value(rng)
        if rng.random() < 0.7:
            window = {"start": "2026-11-11T00:00", "duration": "2h", "timezone": "UTC"}
            window[rng.choice(window_keys)] = _random_value(rng)
            event["window"] = window
        try:
            parse_profile(event)
        except ProfileError:
            pass
