"""Issue 11 item 10, the pure logic: known_hosts read as OpenSSH reads it (files, hashed names,
ports, patterns, markers, bad lines) and what turns host key checking off for Ansible.
The same verdicts against a real sshd: tests/integration/test_sec_keys_lab.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from opsctl import hostkeys
from opsctl.errors import OpsctlError
from opsctl.sshexec import target_for

REPO = Path(__file__).resolve().parents[2]


def _key() -> paramiko.PKey:
    # paramiko cannot generate ed25519 keys; ECDSA and RSA keys are as good for these verdicts.
    return paramiko.ECDSAKey.generate()


def line(names: str, key: paramiko.PKey, marker: str = "") -> str:
    return f"{marker + ' ' if marker else ''}{names} {key.get_name()} {key.get_base64()}\n"


def book(tmp_path: Path, *lines: str, name: str = "known_hosts") -> hostkeys.KnownHosts:
    path = tmp_path / name
    path.write_text("".join(lines))
    return hostkeys.load([path])


def refusal(known: hostkeys.KnownHosts, name: str, key: paramiko.PKey) -> str:
    try:
        known.trust(name).verify(name, key)
    except hostkeys.HostKeyRefused as exc:
        return str(exc)
    return ""


def test_an_unknown_host_is_refused_and_its_own_key_accepted(tmp_path):
    mine, other = _key(), _key()
    known = book(tmp_path, line("10.0.0.2", other))
    assert refusal(known, "10.0.0.1", mine).startswith("unknown host key: 10.0.0.1 is not in ")
    assert refusal(book(tmp_path, line("10.0.0.1", mine)), "10.0.0.1", mine) == ""


def test_a_different_key_is_a_mismatch_naming_the_line(tmp_path):
    recorded, offered = _key(), _key()
    known = book(tmp_path, "# a comment\n", "\n", line("web1", recorded))
    assert refusal(known, "web1", offered).startswith(f"host key mismatch: web1 offered a {offered.get_name()} key")
    assert f"{tmp_path / 'known_hosts'}:3" in refusal(known, "web1", offered)


def test_revoked_wins_over_a_line_that_trusts_the_key(tmp_path):
    key = _key()
    known = book(tmp_path, line("web1", key), line("*", key, "@revoked"))
    assert refusal(known, "web1", key).startswith("revoked host key: web1")
    # The revoked key is gone from the host's keys: only the revoked verdict, never a pass.
    assert known.trust("web1").keys == ()


def test_a_cert_authority_line_does_not_break_the_others(tmp_path):
    key, ca = _key(), _key()
    known = book(tmp_path, line("*.example.com,10.0.0.*", ca, "@cert-authority"), line("10.0.0.1", key))
    assert known.skipped == ()
    assert refusal(known, "10.0.0.1", key) == ""
    only_ca = refusal(known, "10.0.0.9", key)
    assert only_ca.startswith("unknown host key: 10.0.0.9 is trusted only through @cert-authority")
    assert "cannot verify host certificates" in only_ca


def test_hashed_names_and_ports(tmp_path):
    key = _key()
    hashed = paramiko.HostKeys.hash_host("[10.0.0.1]:2222")
    known = book(tmp_path, line(hashed, key), line("[10.0.0.5]:2200", key))
    assert refusal(known, hostkeys.lookup_name("10.0.0.1", 2222), key) == ""
    assert refusal(known, hostkeys.lookup_name("10.0.0.5", 2200), key) == ""
    # The same host on port 22 is another name; so is another port.
    assert refusal(known, hostkeys.lookup_name("10.0.0.1", 22), key).startswith("unknown host key")
    assert refusal(known, hostkeys.lookup_name("10.0.0.5", 2201), key).startswith("unknown host key")
    assert hostkeys.lookup_name("10.0.0.1", 2222, alias="web1") == "web1"


def test_patterns_wildcards_negation_and_case(tmp_path):
    key = _key()
    known = book(tmp_path, line("!10.0.0.13,10.0.0.?,WEB*.example.com", key))
    assert refusal(known, "10.0.0.7", key) == ""
    assert refusal(known, "web12.example.com", key) == ""
    assert refusal(known, "10.0.0.13", key).startswith("unknown")     # negated
    assert refusal(known, "10.0.0.70", key).startswith("unknown")     # ? is one character
    # `[` is literal in known_hosts, never a character class.
    assert hostkeys.match_host("[10.0.0.1]:2222", ["[10.0.0.*]:2222"])
    assert not hostkeys.match_host("1", ["[10]"])


def test_bad_lines_are_skipped_and_reported_not_fatal(tmp_path):
    key = _key()
    known = book(tmp_path, "garbage\n", "web1 ssh-ed25519 AAAA@@@\n", "@bogus * ssh-rsa AAAA\n",
                 "|1|bad|hash ssh-rsa AAAA\n", line("web1", key), "web2 ssh-unknown-type AAAA\n")
    assert refusal(known, "web1", key) == ""
    where = str(tmp_path / "known_hosts")
    assert [s.split(": ", 1)[0] for s in known.skipped] == [f"{where}:{n}" for n in (1, 2, 3, 4)]
    # A key type this paramiko does not know is skipped quietly, as ssh skips it.
    assert all(":6" not in s for s in known.skipped)


def test_every_file_is_read_user_and_global(tmp_path):
    key = _key()
    user, system = tmp_path / "user", tmp_path / "global"
    user.write_text(line("other", _key()))
    system.write_text(line("web1", key))
    known = hostkeys.load([user, tmp_path / "missing", system])
    assert refusal(known, "web1", key) == ""
    assert known.skipped == ()


def test_an_unreadable_file_is_reported(tmp_path):
    (tmp_path / "dir").mkdir()
    assert hostkeys.load([tmp_path / "dir"]).skipped[0].startswith(f"{tmp_path / 'dir'}: cannot read")


def test_only_recorded_key_types_are_offered(tmp_path):
    rsa, ecdsa = paramiko.RSAKey.generate(1024), _key()
    trust = book(tmp_path, line("web1", rsa)).trust("web1")
    disabled = trust.disabled_algorithms()["keys"]
    assert "rsa-sha2-512" not in disabled and "ssh-ed25519" in disabled and ecdsa.get_name() in disabled
    assert book(tmp_path, line("web2", rsa)).trust("web1").disabled_algorithms() == {}


def test_target_reads_every_known_hosts_option():
    target = target_for("w", "10.0.0.5", 2222, "u", {
        "ansible_ssh_common_args": "-o 'UserKnownHostsFile=/a /b' -oGlobalKnownHostsFile=/g",
        "ansible_ssh_extra_args": "-o HostKeyAlias=web-alias -o UserKnownHostsFile=/ignored"})
    assert target.known_hosts == (Path("/a"), Path("/b")) and target.global_known_hosts == (Path("/g"),)
    assert target.host_key_alias == "web-alias"
    default = target_for("w", "a", 22, "u", {})
    assert default.known_hosts == tuple(Path(os.path.expanduser(p)) for p in hostkeys.USER_FILES)
    assert default.global_known_hosts == (Path("/etc/ssh/ssh_known_hosts"), Path("/etc/ssh/ssh_known_hosts2"))
    assert target_for("w", "a", 22, "u", {"ansible_ssh_common_args": "-o UserKnownHostsFile=none"}).known_hosts == ()


def test_ssh_options_forms():
    args = "-C -o StrictHostKeyChecking=no -oStrictHostKeyChecking=yes -o 'StrictHostKeyChecking accept-new'"
    assert hostkeys.ssh_options(args, "stricthostkeychecking") == ["no", "yes", "accept-new"]


@pytest.mark.parametrize("host_vars, where", [
    ({"ansible_host_key_checking": False}, "ansible_host_key_checking=False in the inventory"),
    ({"ansible_ssh_host_key_checking": "no"}, "ansible_ssh_host_key_checking=False in the inventory"),
    ({"ansible_ssh_common_args": "-o StrictHostKeyChecking=no"},
     "StrictHostKeyChecking=no in ansible_ssh_common_args (the inventory)"),
    ({"ansible_ssh_extra_args": "-o StrictHostKeyChecking=accept-new"},
     "StrictHostKeyChecking=accept-new in ansible_ssh_extra_args (the inventory)"),
])
def test_inventory_that_turns_checking_off_is_refused(host_vars, where):
    with pytest.raises(OpsctlError) as err:
        hostkeys.guard_ansible({"web1": host_vars, "web2": {}})
    assert str(err.value).startswith(f"host key checking is off for Ansible's connection to web1: {where}:")
    assert "\n" not in str(err.value)


def test_checking_on_is_silent_and_acceptance_warns():
    assert hostkeys.guard_ansible({"web1": {}, "web2": {"ansible_ssh_common_args": "-o StrictHostKeyChecking=yes"}}) == ""
    # ssh takes the first value it is given, and Ansible puts its own `-o StrictHostKeyChecking=no`
    # (host_key_checking off) before the common args: a `yes` there does not turn checking back on.
    with pytest.raises(OpsctlError):
        hostkeys.guard_ansible({"w": {"ansible_ssh_common_args": "-o StrictHostKeyChecking=yes",
                                      "ansible_host_key_checking": False}})
    warning = hostkeys.guard_ansible({"w": {"ansible_host_key_checking": False,
                                            "opsctl_accept_unchecked_host_keys": "yes"}})
    assert warning.startswith("opsctl: warning: host key checking is off for Ansible's connection to w: ")
    assert hostkeys.guard_ansible({"w": {"ansible_connection": "local", "ansible_host_key_checking": False}}) == ""


def test_environment_turns_checking_off(monkeypatch):
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")
    with pytest.raises(OpsctlError, match=r"to a \(and 1 more host\(s\)\): ANSIBLE_HOST_KEY_CHECKING=False in "
                                          r"the environment"):
        hostkeys.guard_ansible({"a": {}, "b": {}})
    monkeypatch.setenv("ANSIBLE_SSH_ARGS", "-o StrictHostKeyChecking=yes")
    assert hostkeys.guard_ansible({"a": {}}) == ""      # ssh_args come first: ssh keeps `yes`


def test_ansible_cfg_turns_checking_off(tmp_path):
    """ansible.cfg is read once per process: a fresh one with ANSIBLE_CONFIG pointing at the file."""
    cfg = tmp_path / "ansible.cfg"
    cfg.write_text("[defaults]\nhost_key_checking = False\n")
    code = ("from opsctl import hostkeys\n"
            "try:\n    hostkeys.guard_ansible({'web1': {}})\nexcept Exception as exc:\n    print(exc)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env=dict(env, ANSIBLE_CONFIG=str(cfg)), timeout=60)
    assert proc.stdout.startswith(f"host key checking is off for Ansible's connection to web1: "
                                  f"host_key_checking=False in {cfg}:"), proc.stdout + proc.stderr


def test_runner_refuses_before_ansible_runs(monkeypatch, tmp_path):
    from opsctl import runner

    monkeypatch.setattr(runner, "_new_run_dir", lambda name: pytest.fail("a run started"))
    with pytest.raises(OpsctlError, match="host key checking is off"):
        runner.run_playbook("harden", tmp_path, host_vars={"web1": {"ansible_host_key_checking": "no"}})
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")
    with pytest.raises(OpsctlError, match="connection to every host"):   # a caller that gave no host vars
        runner.run_playbook("harden", tmp_path)
