"""Inventories are read with Ansible's own parser; errors are one line naming the file."""

import json
import textwrap
from pathlib import Path

import pytest

from opsctl.errors import OpsctlError
from opsctl.inventory import InventoryError, load_inventory
from opsctl.profile import ProfileError
from tests.conftest import opsctl

PROFILE = textwrap.dedent("""\
    opsctl_event:
      peak_qps: 300
      request_time: {typical_ms: 50, p99_ms: 250}
      client_timeout_s: 8
      php_worker_memory_mb: 40
    """)


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_example_inventory_has_lb_and_web_with_profiles():
    inv = load_inventory("example")
    groups = {g.name: g for g in inv.groups}
    assert len(groups["lb"].hosts) == 2 and len(groups["web"].hosts) == 6
    assert groups["web"].profile.peak_qps == 640
    assert groups["web"].profile_source.endswith("group_vars/web.yml")
    web1 = inv.host("web-01.shop.example")
    assert web1.address == "192.0.2.21" and web1.user == "deploy" and web1.become
    assert web1.groups == ("web",) and web1.profile.client_timeout_s == 10


def test_ini_inventory_with_group_and_host_vars(tmp_path):
    write(tmp_path, {
        "hosts.ini": """\
            [web]
            w1 ansible_host=10.0.0.1 ansible_port=2222
            w2 ansible_host=10.0.0.2
            [web:vars]
            ansible_user=ops
            """,
        "group_vars/web.yml": PROFILE,
        "host_vars/w2.yml": PROFILE.replace("peak_qps: 300", "peak_qps: 150"),
    })
    inv = load_inventory(str(tmp_path))
    w1, w2 = inv.host("w1"), inv.host("w2")
    assert (w1.address, w1.port, w1.user) == ("10.0.0.1", 2222, "ops")
    assert w1.profile.peak_qps == 300
    assert w2.profile.peak_qps == 150  # host_vars beat group_vars, as in Ansible


def test_limit_selects_and_unknown_limit_is_an_error():
    assert [h.name for h in load_inventory("example", "lb").hosts] == ["lb-1.shop.example", "lb-2.shop.example"]
    assert len(load_inventory("example", "web:!web-01.shop.example").hosts) == 5
    with pytest.raises(InventoryError, match="--limit 'nosuchgroup' matches no host"):
        load_inventory("example", "nosuchgroup")


@pytest.mark.parametrize("name, text, fragment", [
    ("hosts.ini", "[web\nw1\n", "cannot parse inventory"),
    ("hosts.yml", "all:\n  hosts: [a\n", "YAML parsing failed"),
])
def test_malformed_inventory_is_one_line_naming_the_file(tmp_path, name, text, fragment):
    path = write(tmp_path, {name: text}) / name
    with pytest.raises(InventoryError) as err:
        load_inventory(str(path))
    message = str(err.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_bad_profile_names_the_group_vars_file(tmp_path):
    write(tmp_path, {
        "hosts.yml": "all:\n  children:\n    web:\n      hosts:\n        w1:\n",
        "group_vars/web.yml": PROFILE.replace("peak_qps: 300", "peak_qps: -1"),
    })
    with pytest.raises(ProfileError) as err:
        load_inventory(str(tmp_path))
    assert str(tmp_path / "group_vars/web.yml") in str(err.value)
    assert "opsctl_event.peak_qps" in str(err.value)


def test_unknown_inventory_name():
    with pytest.raises(OpsctlError, match="inventory 'nope' not found"):
        load_inventory("nope")


def test_cli_errors_are_one_line_exit_2_no_traceback(tmp_path):
    write(tmp_path, {"hosts.yml": "all:\n  children:\n    web:\n      hosts:\n        w1:\n",
                     "group_vars/web.yml": PROFILE.replace("client_timeout_s: 8", "client_timeout_s: bad")})
    for command in (["inventory"], ["harden"], ["check"], ["reload", "php-fpm", "--rolling"],
                    ["logrotate", "plan"]):
        proc = opsctl(*command, "--inventory", str(tmp_path))
        assert proc.returncode == 2, (command, proc.stderr)
        assert "Traceback" not in proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "group_vars/web.yml" in lines[0] and "client_timeout_s" in lines[0]


def test_cli_inventory_json():
    proc = opsctl("inventory", "--inventory", "example", "--format", "json", check=True)
    data = json.loads(proc.stdout)
    web = next(g for g in data["groups"] if g["name"] == "web")
    assert web["profile"]["peak_qps"] == 640 and web["profile"]["window"]["timezone"] == "Asia/Shanghai"
    assert {h["name"] for h in data["hosts"]} >= {"lb-1.shop.example", "web-06.shop.example"}


def test_unknown_harden_part_is_one_line_and_exit_2_before_any_host_is_touched():
    proc = opsctl("harden", "--inventory", "example", "--tags", "sysctl,kernel")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "'kernel'" in proc.stderr and "Traceback" not in proc.stderr


def _static_inventory(root: Path) -> Path:
    return write(root / "inv", {
        "hosts.yml": """\
            web:
              hosts:
                w1: {ansible_host: 10.0.0.1}
            """,
        "group_vars/web.yml": PROFILE,
    })


def test_unchanged_inventory_comes_from_the_cache_and_any_edit_is_a_miss(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    inv_dir = _static_inventory(tmp_path)
    first = load_inventory(str(inv_dir))
    entries = list((tmp_path / "cache/opsctl/inventory").glob("*.json"))
    assert len(entries) == 1 and entries[0].stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "cache/opsctl/inventory").stat().st_mode & 0o777 == 0o700

    def no_ansible(*args, **kwargs):
        raise AssertionError("Ansible was asked although the inventory did not change")
    monkeypatch.setattr("opsctl.inventory.ansible_snapshot", no_ansible)
    again = load_inventory(str(inv_dir))
    assert again == first and again.host("w1").profile.peak_qps == 300

    (inv_dir / "group_vars/web.yml").write_text(PROFILE.replace("peak_qps: 300", "peak_qps: 400"))
    with pytest.raises(AssertionError, match="Ansible was asked"):
        load_inventory(str(inv_dir))
    monkeypatch.undo()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert load_inventory(str(inv_dir)).host("w1").profile.peak_qps == 400


def test_dynamic_and_vaulted_inventories_are_never_cached(tmp_path):
    from opsctl import inventory_cache

    static = _static_inventory(tmp_path)
    assert inventory_cache.key_for(static, None) is not None
    assert inventory_cache.key_for(static, None) != inventory_cache.key_for(static, "w1")
    script = write(tmp_path / "dyn", {"inventory.sh": "#!/bin/sh\necho '{}'\n"})
    (script / "inventory.sh").chmod(0o755)
    assert inventory_cache.key_for(script, None) is None
    plugin = write(tmp_path / "plug", {"aws_ec2.yml": "plugin: amazon.aws.aws_ec2\n"})
    assert inventory_cache.key_for(plugin, None) is None
    vaulted = write(tmp_path / "vault", {"hosts.yml": "all: {hosts: {a: {}}}\n",
                                         "group_vars/all.yml": "secret: !vault |\n  $ANSIBLE_VAULT;1.1;AES256\n  6162\n"})
    assert inventory_cache.key_for(vaulted, None) is None
