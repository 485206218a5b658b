"""How opsctl decides to reach a host: the command line Ansible's ssh connection would run,
resolved by OpenSSH itself (ssh -G), ProxyJump chains resolved hop by hop as ssh's -W child
would. Pure: nothing connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsctl import sshconfig
from opsctl.sshconfig import SshConfigError, SshDefaults
from opsctl.sshexec import target_for, targets_for


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d/bastion.conf").write_text(
        "Host bastion\n  HostName 192.0.2.5\n  User jump\n  Port 2222\n  IdentityFile ~/.ssh/jump_key\n")
    path = tmp_path / "config"
    path.write_text(f"""\
Include {tmp_path}/conf.d/*.conf
Host web* !web9
  ProxyJump bastion,inner
  User www
  UserKnownHostsFile {tmp_path}/known
  IdentitiesOnly yes
Host inner
  HostName 10.9.0.1
Host legacy
  ProxyCommand nc -X connect -x proxy:3128 %h %p
  HostKeyAlias legacy-alias
  CertificateFile ~/.ssh/cert.pub
""")
    return path


def resolve(config: Path, host: str, **host_vars):
    return sshconfig.resolve({"ansible_ssh_common_args": f"-F {config}", **host_vars}, host)


def test_ssh_config_decides_what_the_inventory_does_not(config, tmp_path):
    web = resolve(config, "web1")
    assert (web.hostname, web.port, web.user, web.identities_only) == ("web1", 22, "www", True)
    assert web.known_hosts == (tmp_path / "known",)
    # The jump list: bastion (from an Included file), then inner reached through it.
    assert [(h.name, h.hostname, h.port, h.user) for h in web.via] == [
        ("bastion", "192.0.2.5", 2222, "jump"), ("inner", "10.9.0.1", 22, "root")]
    assert web.via[-1].via == web.via[:1]          # inner is reached through bastion
    assert str(web.via[0].identity_files[0]).endswith("/.ssh/jump_key")
    assert resolve(config, "web9").via == ()        # a negated pattern


def test_ansibles_own_user_and_port_win_over_ssh_config_and_extra_args(config):
    web = resolve(config, "web1", ansible_user="deploy", ansible_port=2200,
                  ansible_ssh_extra_args="-o User=ignored -o Port=1")
    assert (web.user, web.port) == ("deploy", 2200)
    # ansible.cfg's remote_user is Ansible's too; ssh_config only decides where neither is set.
    assert sshconfig.resolve({"ansible_ssh_common_args": f"-F {config}"}, "web1",
                             SshDefaults(remote_user="cfguser")).user == "cfguser"
    assert sshconfig.resolve({"ansible_ssh_common_args": f"-F {config}"}, "web1",
                             SshDefaults(ssh_args="-o User=fromargs")).user == "fromargs"


def test_proxy_command_tokens_alias_and_what_cannot_be_honoured(config):
    legacy = resolve(config, "legacy", ansible_user="ops")
    assert legacy.proxy_command == "nc -X connect -x proxy:3128 legacy 22"
    assert legacy.host_key_alias == "legacy-alias" and legacy.via == ()
    assert legacy.unhonoured == ("CertificateFile",)


def test_jump_specs_with_user_and_port_on_the_command_line(config):
    web = resolve(config, "other", ansible_ssh_extra_args="-J admin@bastion:2022")
    assert [(h.hostname, h.port, h.user) for h in web.via] == [("192.0.2.5", 2022, "admin")]
    assert sshconfig._jump_spec("ssh://u@[2001:db8::1]:23") == ("u", "2001:db8::1", "23")


def test_a_bad_option_is_that_hosts_one_line_error(config, tmp_path):
    with pytest.raises(SshConfigError, match="ssh -G web1: .*Bad configuration option: bogus"):
        resolve(config, "web1", ansible_ssh_extra_args="-o Bogus=1")

    class Host:
        def __init__(self, name, vars_):
            self.name, self.address, self.port, self.user, self.vars, self.secrets = name, name, 22, "root", vars_, {}
    good, bad = targets_for([Host("web1", {"ansible_ssh_common_args": f"-F {config}"}),
                             Host("web2", {"ansible_ssh_common_args": "-o Bogus=1"})])
    assert good.problem == "" and good.endpoint.via
    assert bad.problem.startswith("ssh -G web2:") and "\n" not in bad.problem


def test_passwords_and_become_settings_reach_the_target_and_never_its_repr():
    target = target_for("w", "10.0.0.5", 22, "deploy", {
        "ansible_become": True, "ansible_become_password": "s3cret-b", "ansible_ssh_pass": "s3cret-l"})
    assert target.secrets.become_password == "s3cret-b" and target.secrets.password == "s3cret-l"
    assert "s3cret" not in repr(target)
    su = target_for("w", "a", 22, "u", {"ansible_become": True, "ansible_become_method": "su"})
    assert su.problem == "ansible_become_method su: opsctl's own connections become root with sudo only"


def test_a_become_password_is_answered_on_the_channel_never_on_the_command_line():
    from opsctl.sshexec import remote_command
    with_password = target_for("w", "a", 22, "u", {"ansible_become": True, "ansible_become_password": "pw-x"})
    command, marker = remote_command(with_password, "sh -s")
    assert marker and "pw-x" not in command and command.startswith("sudo -S -p ")
    assert f"OPSCTL-BECOME-{marker}" in command
    assert remote_command(target_for("w", "a", 22, "u", {"ansible_become": True}), "sh -s") == ("sudo -n sh -s", "")


def test_ssh_config_that_turns_host_key_checking_off_is_seen_for_ansibles_runs_too(tmp_path):
    from opsctl.hostkeys import unchecked_by
    loose = tmp_path / "loose"
    loose.write_text("Host web*\n  StrictHostKeyChecking no\n")
    where = unchecked_by({"ansible_ssh_common_args": f"-F {loose}"}, "web1")
    assert where == "StrictHostKeyChecking false in ssh_config (as ssh -G resolves it)"
    assert unchecked_by({"ansible_ssh_common_args": f"-F {loose}"}, "db1") is None
    # The command line's value comes first, as for ssh itself.
    assert unchecked_by({"ansible_ssh_common_args": f"-o StrictHostKeyChecking=yes -F {loose}"}, "web1") is None
