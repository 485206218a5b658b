"""Security of the fleet layer (issue 11, items 4, 5, 7, 9): caches nobody else can plant, a
sandbox that cannot change facts, vault like the Ansible CLI, no secret in caches or errors,
and inventory values read the way Ansible reads them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jinja2
import pytest
import yaml

from ansible_collections.opsctl.fleet.plugins.plugin_utils.check_engine import Engine, Unavailable, load_catalog

from opsctl import inventory_cache
from opsctl.checks.run import capacity_model, load_checks
from opsctl.harden import plan_host
from opsctl.inventory import InventoryError, load_inventory
from opsctl.redact import hide_values, is_secret_name
from opsctl.runner import scrubbed_env

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
PROFILE = textwrap.dedent("""\
    opsctl_event:
      peak_qps: 300
      request_time: {typical_ms: 50, p99_ms: 250}
      client_timeout_s: 8
      php_worker_memory_mb: 40
    """)
SECRET = "hunter2-0c7f3e"
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def opsctl(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """opsctl as a user runs it, from any directory (this checkout first on the path), no TTY."""
    environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run([sys.executable, "-m", "opsctl", *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env=environment, stdin=subprocess.DEVNULL, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsctl: error: "), proc.stderr
    return lines[0]


@pytest.fixture
def cache_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


# --- item 4: the catalog's compile cache, the sandbox, the inventory cache ----------------------

def test_planted_compiled_catalog_never_runs(tmp_path, cache_home):
    """Jinja's bytecode cache unmarshals code from ~/.cache/opsctl: a planted file ran as root."""
    marker = tmp_path / "pwned"
    observed = "planted {{ facts.x }}"
    catalog = tmp_path / "mine.yml"
    catalog.write_text(yaml.safe_dump({"checks": [{
        "id": "mine", "title": "t", "severity": "warn", "failure_mode": "F1", "facts": ["x"],
        "rule": "facts.x < 10", "observed": observed, "expected": "< 10", "remediation": "fix"}]}))
    # What the old cache would have loaded for that template, made with Jinja's own cache code.
    planted = cache_home / "opsctl" / f"catalog-jinja{jinja2.__version__}-sandbox"
    planted.mkdir(parents=True, mode=0o700)
    cache = jinja2.FileSystemBytecodeCache(str(planted))
    bucket = jinja2.bccache.Bucket(jinja2.Environment(), cache.get_cache_key(observed),
                                   cache.get_source_checksum(observed))
    bucket.code = compile(f"import pathlib; pathlib.Path({str(marker)!r}).write_text('ran')", "<planted>", "exec")
    cache.dump_bytecode(bucket)
    before = sorted(p.relative_to(cache_home) for p in cache_home.rglob("*"))

    engine, _ = load_checks((str(catalog),))
    results = engine.evaluate("h", {"facts": {"x": 3}})
    assert not marker.exists(), "a planted compiled template ran"
    assert [r.observed for r in results if r.check == "mine"] == ["planted 3"]
    assert sorted(p.relative_to(cache_home) for p in cache_home.rglob("*")) == before, \
        "the catalog wrote compiled code to the cache"


BASE_CHECK = {"id": "c", "title": "t", "severity": "fail", "failure_mode": "F1", "facts": ["x"],
              "observed": "x", "expected": "y", "remediation": "fix"}


@pytest.mark.parametrize("rule", [
    "facts.update({'x': [0]}) is none",
    "facts.x.append(1) is none",
    "facts.pop('x') != 0",
    "facts.x.clear() is none",
    "facts.__class__.__name__ == 'dict'",
    "facts.x.__class__.__mro__ | length > 0",
])
def test_a_rule_cannot_change_facts_or_reach_internals(rule):
    evil = dict(BASE_CHECK, id="evil", rule=rule)
    after = dict(BASE_CHECK, id="after", rule="facts.x == [3]")
    engine = Engine(load_catalog([("mine.yml", yaml.safe_dump({"checks": [evil, after]}))]))
    facts = {"x": [3]}
    results = {r.check: r for r in engine.evaluate("h", {"facts": facts})}
    assert results["evil"].status == "error", results["evil"]
    assert results["after"].status == "pass"
    assert facts == {"x": [3]}


def test_a_let_that_mutates_is_that_checks_error_only():
    evil = dict(BASE_CHECK, id="evil", rule="true", let={"gone": "facts.setdefault('y', 1)"})
    engine = Engine(load_catalog([("mine.yml", yaml.safe_dump({"checks": [evil]}))]))
    facts = {"x": [3]}
    assert engine.evaluate("h", {"facts": facts})[0].status == "error" and facts == {"x": [3]}


def _static(root: Path) -> Path:
    return write(root / "inv", {"hosts.yml": "web:\n  hosts:\n    w1: {ansible_host: 10.0.0.1}\n",
                                "group_vars/web.yml": PROFILE})


def _forge(cache_home: Path, inv: Path) -> Path:
    """Load once (a real entry), then make the entry say another address, as a planter would."""
    assert load_inventory(str(inv)).host("w1").address == "10.0.0.1"
    entry = cache_home / "opsctl/inventory" / inventory_cache.entry_name(inventory_cache.key_for(inv, None))
    data = json.loads(entry.read_text())
    data["hosts"][0]["address"] = "203.0.113.66"
    entry.write_text(json.dumps(data))
    return entry


def test_a_private_cache_entry_is_used(tmp_path, cache_home):
    """The control for the cases below: the forged entry is read when the cache is private."""
    inv = _static(tmp_path)
    _forge(cache_home, inv)
    assert load_inventory(str(inv)).host("w1").address == "203.0.113.66"


def _other_writable_entry(entry: Path, tmp_path: Path) -> None:
    entry.chmod(0o666)


def _others_entry(entry: Path, tmp_path: Path) -> None:
    os.chown(entry, 65534, 65534)


def _other_writable_directory(entry: Path, tmp_path: Path) -> None:
    entry.parent.chmod(0o777)


def _others_directory(entry: Path, tmp_path: Path) -> None:
    os.chown(entry.parent, 65534, 65534)


def _symlinked_entry(entry: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    entry.rename(target)
    entry.symlink_to(target)


def _symlinked_cache(entry: Path, tmp_path: Path) -> None:
    top = entry.parent.parent              # XDG_CACHE_HOME/opsctl
    top.rename(tmp_path / "moved")
    top.symlink_to(tmp_path / "moved")


@pytest.mark.parametrize("spoil, directory_spoiled", [
    (_other_writable_entry, False), pytest.param(_others_entry, False, marks=root_only), (_symlinked_entry, False),
    (_other_writable_directory, True), pytest.param(_others_directory, True, marks=root_only),
    (_symlinked_cache, True),
])
def test_a_cache_another_user_could_write_is_ignored(tmp_path, cache_home, spoil, directory_spoiled):
    inv = _static(tmp_path)
    entry = _forge(cache_home, inv)
    spoil(entry, tmp_path)
    forged = entry.read_text()
    assert load_inventory(str(inv)).host("w1").address == "10.0.0.1"
    if directory_spoiled:
        assert entry.read_text() == forged, "opsctl wrote into a cache directory it does not trust"
    else:   # the directory is private: the bad entry was replaced by a private, true one
        st = entry.lstat()
        assert entry.is_file() and not entry.is_symlink() and st.st_mode & 0o777 == 0o600
        assert st.st_uid == os.geteuid() and "203.0.113.66" not in entry.read_text()


def test_cache_directories_are_created_private(tmp_path, cache_home):
    old = os.umask(0)   # the worst case: nothing but opsctl's own modes keeps the cache private
    try:
        load_inventory(str(_static(tmp_path)))
    finally:
        os.umask(old)
    for directory in (cache_home / "opsctl", cache_home / "opsctl/inventory"):
        assert directory.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in (cache_home / "opsctl/inventory").iterdir())


# --- item 7: secrets --------------------------------------------------------------------------

def test_neither_the_cache_nor_opsctl_keeps_a_password(tmp_path, cache_home):
    inv = write(tmp_path / "inv", {
        "hosts.yml": f"""\
            web:
              hosts:
                w1: {{ansible_host: 10.0.0.1, ansible_password: {SECRET}-1, ansible_ssh_pass: {SECRET}-2}}
            """,
        "group_vars/web.yml": PROFILE + f"ansible_become_password: {SECRET}-3\nopsctl_api_token: {SECRET}-4\n"
                              f"ansible_become_pass: {SECRET}-5\nunrelated_db_password: {SECRET}-6\n"
                              "ansible_become: 'yes'\nopsctl_smoke_path: /health.php\n",
    })
    host = load_inventory(str(inv)).host("w1")
    assert SECRET not in json.dumps(dict(host.vars)) and SECRET not in repr(host)
    assert host.vars["opsctl_smoke_path"] == "/health.php" and host.become and host.profile.peak_qps == 300
    # The connection passwords, Ansible's own names first, for opsctl's own connections only;
    # an inventory that holds one is never cached (a cache entry would be a password on disk).
    assert host.secrets == {"password": f"{SECRET}-1", "become_password": f"{SECRET}-3"}
    assert not list((cache_home / "opsctl/inventory").glob("*.json"))
    load_inventory(str(write(tmp_path / "plain", {"hosts.yml": "web:\n  hosts:\n    w1:\n"})))
    assert len(list((cache_home / "opsctl/inventory").glob("*.json"))) == 1


def test_entries_an_older_opsctl_wrote_are_removed(tmp_path, cache_home):
    """They held every host variable, passwords included."""
    old = cache_home / "opsctl/inventory" / f"{'0' * 64}.json"
    old.parent.mkdir(parents=True, mode=0o700)
    old.write_text(json.dumps({"hosts": [{"vars": {"ansible_password": SECRET}}]}))
    load_inventory(str(_static(tmp_path)))
    assert not old.exists() and len(list(old.parent.glob("*.json"))) == 1


@pytest.mark.parametrize("line", [
    f'w1 ansible_host=10.0.0.1 ansible_password="{SECRET}',         # an unclosed quote
    f"w1 ansible_host=10.0.0.1 ansible_password={SECRET} with-a-space",
    f"w1 ansible_password={SECRET} ansible_port=22 = x",
])
def test_an_ini_parse_error_never_echoes_a_password(tmp_path, line):
    path = write(tmp_path, {"hosts.ini": f"[web]\n{line}\n"}) / "hosts.ini"
    with pytest.raises(InventoryError) as err:
        load_inventory(str(path))
    message = str(err.value)
    assert str(path) in message and "cannot parse inventory" in message and "\n" not in message
    assert SECRET not in message and "with-a-space" not in message


def test_an_ini_vars_section_error_never_echoes_a_password(tmp_path):
    path = write(tmp_path, {"hosts.ini": f"[web]\nw1\n[web:vars]\nansible_become_password {SECRET}\n"}) / "hosts.ini"
    proc = opsctl("inventory", "--inventory", str(path))
    assert SECRET not in one_line_error(proc) and str(path) in proc.stderr


def test_a_broken_group_vars_file_is_one_line_naming_it(tmp_path):
    inv = write(tmp_path / "inv", {"hosts.yml": "web:\n  hosts:\n    w1:\n",
                                   "group_vars/web.yml": f'ansible_password: "{SECRET}\nfoo: [\n'})
    line = one_line_error(opsctl("inventory", "--inventory", str(inv)))
    assert str(inv / "group_vars/web.yml") in line and SECRET not in line


def test_what_counts_as_a_secret():
    for name in ("ansible_password", "ansible_ssh_pass", "ansible_become_pass", "ansible_become_password",
                 "ansible_sudo_pass", "opsctl_api_token", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN",
                 "ANSIBLE_NET_PASSWORD", "ansible_private_key_passphrase"):
        assert is_secret_name(name), name
    for name in ("ansible_host", "ansible_ssh_private_key_file", "ANSIBLE_VAULT_PASSWORD_FILE",
                 "ANSIBLE_VAULT_IDENTITY_LIST", "opsctl_balancers", "opsctl_shed_key", "PATH"):
        assert not is_secret_name(name), name
    assert hide_values("got: ansible_password=x y") == "got: ansible_password=… …"


def test_ansible_runner_gets_only_what_ansible_playbook_needs():
    operator = {"PATH": "/usr/bin", "HOME": "/root", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
                "SSH_AUTH_SOCK": "/tmp/agent", "ANSIBLE_CONFIG": "/etc/a.cfg",
                "ANSIBLE_VAULT_PASSWORD_FILE": "/root/.vault", "ANSIBLE_NET_PASSWORD": SECRET,
                "DB_PASSWORD": SECRET, "AWS_SECRET_ACCESS_KEY": SECRET, "OPSCTL_TEST_SECRET": SECRET}
    prepared = dict(operator, PATH="/venv/bin:/usr/bin", ANSIBLE_FORKS="5", ANSIBLE_STDOUT_CALLBACK="awx_display",
                    AWX_ISOLATED_DATA_DIR="/runs/x/artifacts/1")
    env = scrubbed_env(prepared, operator)
    assert SECRET not in json.dumps(env)
    assert env["PATH"] == "/venv/bin:/usr/bin" and env["AWX_ISOLATED_DATA_DIR"] == "/runs/x/artifacts/1"
    assert {"HOME", "LANG", "LC_ALL", "SSH_AUTH_SOCK", "ANSIBLE_CONFIG", "ANSIBLE_VAULT_PASSWORD_FILE",
            "ANSIBLE_FORKS", "ANSIBLE_STDOUT_CALLBACK"} <= env.keys()


# --- item 9: values as Ansible reads them ------------------------------------------------------

def test_templated_inventory_values_are_resolved_by_ansible(tmp_path, monkeypatch, cache_home):
    monkeypatch.setenv("OPSCTL_TEST_ADDRESS", "10.9.9.9")
    inv = write(tmp_path / "inv", {
        "hosts.ini": """\
            [web]
            w1 ansible_host="{{ base }}.11"
            w2 ansible_host="{{ lookup('env', 'OPSCTL_TEST_ADDRESS') }}" ansible_port="{{ 2200 + 22 }}"
            [web:vars]
            base=10.1.2
            """,
        "group_vars/web.yml": PROFILE.replace("peak_qps: 300", "peak_qps: \"{{ qps }}\"") + "qps: 400\n",
    })
    loaded = load_inventory(str(inv))
    w1, w2 = loaded.host("w1"), loaded.host("w2")
    assert (w1.address, w2.address, w2.port) == ("10.1.2.11", "10.9.9.9", 2222)
    assert w1.profile.peak_qps == 400 and next(g for g in loaded.groups if g.name == "web").profile.peak_qps == 400
    # A lookup's answer is not in the files the cache is keyed on: a templated inventory is read afresh.
    monkeypatch.setenv("OPSCTL_TEST_ADDRESS", "10.9.9.10")
    assert load_inventory(str(inv)).host("w2").address == "10.9.9.10"


def test_an_unresolvable_template_is_one_line(tmp_path):
    inv = write(tmp_path / "inv", {"hosts.yml": "web:\n  hosts:\n    w1: {ansible_host: '{{ nowhere }}.1'}\n"})
    line = one_line_error(opsctl("inventory", "--inventory", str(inv)))
    assert "w1: ansible_host" in line and "nowhere" in line


OVERRIDE = "opsctl_capacity_overrides: {php_fpm.listen_backlog: 100000}\n"
FACTS = {"host": {"cpus": 8, "nofile_max": 1048576}, "memory": {"total_mb": 16384},
         "php_fpm": {"present": True, "version": "8.2"}}


@pytest.mark.parametrize("text, forced", [("false", False), ("False", False), ("no", False), ("off", False),
                                          ("0", False), ("true", True), ("yes", True), ("on", True)])
def test_check_and_harden_read_a_boolean_alike(tmp_path, text, forced):
    """INI inventories give strings: "false" was true for check (bool("false")) and false for harden."""
    inv = write(tmp_path / "inv", {"hosts.ini": f'[web]\nw1 opsctl_capacity_force="{text}"\n',
                                   "group_vars/web.yml": PROFILE + OVERRIDE})
    host = load_inventory(str(inv)).host("w1")
    harden = plan_host(host, {"cpus": 8, "memory_mb": 16384, "php_version": "8.2", "nofile_max": 1048576})
    check = capacity_model(host, FACTS)
    assert harden.refused is not forced, harden.error
    assert isinstance(check, Unavailable) is not forced, dict(check) if forced else check.reason


def test_become_is_read_as_ansible_reads_it(tmp_path):
    inv = write(tmp_path / "inv", {"hosts.ini": "[web]\nw1 ansible_become=on\nw2 ansible_become=no\n"})
    loaded = load_inventory(str(inv))
    assert loaded.host("w1").become and not loaded.host("w2").become


def test_a_boolean_that_is_none_is_one_line(tmp_path):
    inv = write(tmp_path / "inv", {"hosts.ini": "[web]\nw1 opsctl_capacity_force=maybe\n"})
    line = one_line_error(opsctl("inventory", "--inventory", str(inv)))
    assert "w1: opsctl_capacity_force: 'maybe' is not a boolean" in line


# --- item 5: vault ----------------------------------------------------------------------------

PASSWORD = "correct horse 7e1"


def _vault(*args: str, cwd: Path) -> str:
    return subprocess.run([str(VENV_BIN / "ansible-vault"), *args], cwd=cwd, check=True, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL).stdout


@pytest.fixture
def vaulted(tmp_path) -> Path:
    """An inventory whose group_vars/web.yml (the event profile) is vault-encrypted."""
    inv = write(tmp_path / "inv", {"hosts.yml": "web:\n  hosts:\n    w1: {ansible_host: 10.0.0.1}\n",
                                   "group_vars/web.yml": PROFILE})
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "wrong").write_text("not it\n")
    _vault("encrypt", "--vault-password-file", str(tmp_path / "pw"), str(inv / "group_vars/web.yml"), cwd=tmp_path)
    return inv


def _profile_of(proc: subprocess.CompletedProcess) -> int:
    assert proc.returncode == 0, proc.stderr
    return next(g for g in json.loads(proc.stdout)["groups"] if g["name"] == "web")["profile"]["peak_qps"]


def test_a_vaulted_group_vars_file_needs_a_secret_and_says_so(vaulted):
    line = one_line_error(opsctl("inventory", "--inventory", str(vaulted)))
    assert str(vaulted / "group_vars/web.yml") in line and "--vault-password-file" in line
    wrong = one_line_error(opsctl("inventory", "--inventory", str(vaulted), "--vault-password-file",
                                  str(vaulted.parent / "wrong")))
    assert str(vaulted / "group_vars/web.yml") in wrong and "cannot decrypt" in wrong
    missing = one_line_error(opsctl("inventory", "--inventory", str(vaulted), "--vault-password-file",
                                    str(vaulted.parent / "absent")))
    assert "absent" in missing


@pytest.mark.parametrize("how", ["password-file", "vault-id", "env", "env-identity-list", "ansible.cfg"])
def test_vault_secrets_are_taken_as_the_ansible_cli_takes_them(vaulted, how, cache_home):
    pw = vaulted.parent / "pw"
    args, env, cwd = [], {}, None
    if how == "password-file":
        args = ["--vault-password-file", "../pw"]
        cwd = vaulted                                    # relative to where opsctl runs
    elif how == "vault-id":
        args = ["--vault-id", "wrong@" + str(vaulted.parent / "wrong"), "--vault-id", f"prod@{pw}"]
    elif how == "env":
        env = {"ANSIBLE_VAULT_PASSWORD_FILE": str(pw)}
    elif how == "env-identity-list":
        env = {"ANSIBLE_VAULT_IDENTITY_LIST": f"prod@{pw}"}
    else:
        cwd = vaulted.parent
        (cwd / "ansible.cfg").write_text("[defaults]\nvault_password_file = pw\n")
        cwd.chmod(0o755)                                 # Ansible ignores ./ansible.cfg in a world-writable dir
    proc = opsctl("inventory", "--inventory", str(vaulted), "--format", "json", *args, cwd=cwd, env=env)
    assert _profile_of(proc) == 300
    assert not list(cache_home.rglob("*.json")), "a vaulted inventory was cached"


def test_ask_vault_pass_needs_a_terminal(vaulted):
    line = one_line_error(opsctl("inventory", "--inventory", str(vaulted), "--ask-vault-pass"))
    assert "terminal" in line and "--vault-password-file" in line


def test_ask_vault_pass_prompts_on_the_terminal(vaulted):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "opsctl", "inventory", "--inventory", str(vaulted),
                                           "--format", "json", "--ask-vault-pass"],
                          cwd=str(REPO), env=dict(os.environ, PYTHONPATH=str(REPO)), encoding="utf-8", timeout=60)
    child.expect("Vault password: ")
    child.sendline(PASSWORD)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert '"peak_qps": 300' in child.before and PASSWORD not in child.before


def test_inline_vault_values_opsctl_reads_need_the_secret_others_do_not(tmp_path, cache_home):
    (tmp_path / "pw").write_text(PASSWORD)
    pw = str(tmp_path / "pw")
    address = _vault("encrypt_string", "--vault-password-file", pw, "10.0.0.7", "--name", "ansible_host", cwd=tmp_path)
    become = _vault("encrypt_string", "--vault-password-file", pw, SECRET, "--name", "ansible_become_password",
                    cwd=tmp_path)
    inv = write(tmp_path / "inv", {"hosts.yml": "web:\n  hosts:\n    w1:\n    w2: {ansible_host: 10.0.0.8}\n",
                                   "host_vars/w1.yml": address + "\n", "group_vars/web.yml": become + "\n"})
    line = one_line_error(opsctl("inventory", "--inventory", str(inv), "--limit", "w1"))
    assert "w1: ansible_host is vault-encrypted" in line
    assert json.loads(opsctl("inventory", "--inventory", str(inv), "--limit", "w2", "--format", "json",
                             env={"XDG_CACHE_HOME": str(cache_home)}).stdout)["hosts"][0]["address"] == "10.0.0.8"
    proc = opsctl("inventory", "--inventory", str(inv), "--format", "json", "--vault-password-file", pw)
    assert proc.returncode == 0, proc.stderr
    assert {h["name"]: h["address"] for h in json.loads(proc.stdout)["hosts"]} == {"w1": "10.0.0.7", "w2": "10.0.0.8"}
    assert not list(cache_home.rglob("*.json")), "an inventory with inline vault values was cached"
