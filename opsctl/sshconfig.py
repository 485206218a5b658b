"""How to reach a host, decided as Ansible's ssh connection decides it: OpenSSH itself resolves
the command line Ansible would run (`ssh -G`), so ~/.ssh/config (Host patterns, Match, Include,
HostName, User, Port, IdentityFile, ProxyJump chains, ProxyCommand), ansible.cfg's ssh_args and
the inventory's ansible_ssh_common_args / ansible_ssh_extra_args apply exactly as they do for
`ansible -m ping`. Nothing here connects; opsctl/sshexec.py does.

Ansible builds `ssh [ssh_args] [-o Port=] [-o IdentityFile=] [-o User=] -o ConnectTimeout=
[common args] [extra args] HOST`, and ssh keeps the first value it reads of each option, so
Ansible's own Port and User win over the same option in the extra arguments, and ~/.ssh/config
decides whatever neither sets. A ProxyJump hop is resolved the way ssh resolves it for its
`-W` child: from the configuration file alone (and -F when given), with the hop's user and port.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from opsctl.errors import OpsctlError

# Ansible's default [ssh_connection] ssh_args and timeout, for callers without an inventory's.
DEFAULT_SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=60s"
DEFAULT_TIMEOUT = 10
# Settings opsctl's own connections cannot honour; ssh -G prints them when they are set.
_UNHONOURED = {"certificatefile": "CertificateFile", "pkcs11provider": "PKCS11Provider"}
_UNSET = {"none", "", "no"}


# The inventory variables that hold a connection password, by Secrets field, Ansible's name first.
PASSWORD_VARS = {"password": ("ansible_password", "ansible_ssh_pass", "ansible_ssh_password"),
                 "become_password": ("ansible_become_password", "ansible_become_pass")}


def secrets_of(host_vars: Mapping[str, Any]) -> dict[str, str]:
    """The connection passwords among a host's variables, by Secrets field."""
    found = {}
    for field_name, names in PASSWORD_VARS.items():
        value = next((host_vars[n] for n in names if host_vars.get(n) not in (None, "")), None)
        if value is not None:
            found[field_name] = str(value)
    return found


class SshConfigError(OpsctlError):
    """ssh could not resolve a host's settings (a bad ssh_config line, a bad -o option)."""


@dataclass(frozen=True)
class SshDefaults:
    """What ansible.cfg (or ANSIBLE_* variables) says for every host of a run."""
    ssh_args: str = DEFAULT_SSH_ARGS
    remote_user: str = ""
    remote_port: int | None = None
    private_key_file: str = ""
    timeout: int = DEFAULT_TIMEOUT

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "SshDefaults":
        data = data or {}
        port = data.get("remote_port")
        return cls(ssh_args=str(data.get("ssh_args") or ""), remote_user=str(data.get("remote_user") or ""),
                   remote_port=int(port) if port else None,
                   private_key_file=str(data.get("private_key_file") or ""),
                   timeout=int(data.get("timeout") or DEFAULT_TIMEOUT))


def ansible_defaults() -> dict[str, Any]:
    """The run-wide ssh settings of ansible.cfg and the environment, as plain data (it crosses the
    inventory cache, whose key covers ansible.cfg and ANSIBLE_*)."""
    from ansible import constants as C
    from ansible.plugins.loader import connection_loader

    with warnings.catch_warnings():   # its ssh-agent helper imports a deprecated DSA class
        warnings.simplefilter("ignore")
        connection_loader.get("ssh", class_only=True)   # registers the plugin's settings with C.config

    def value(name: str, **plugin: str) -> Any:
        try:
            return C.config.get_config_value(name, **plugin)
        except Exception:     # not a setting of this Ansible version
            return None
    return {"ssh_args": value("ssh_args", plugin_type="connection", plugin_name="ssh") or "",
            "remote_user": value("DEFAULT_REMOTE_USER") or "", "remote_port": value("DEFAULT_REMOTE_PORT"),
            "private_key_file": value("DEFAULT_PRIVATE_KEY_FILE") or "",
            "timeout": value("DEFAULT_TIMEOUT") or DEFAULT_TIMEOUT}


@dataclass(frozen=True)
class Endpoint:
    """One SSH server as OpenSSH would reach it."""
    name: str                       # as the inventory or the jump list names it
    hostname: str
    port: int
    user: str
    identity_files: tuple[Path, ...]    # in ssh's order: those configured, else ssh's defaults
    identities_only: bool
    known_hosts: tuple[Path, ...]
    global_known_hosts: tuple[Path, ...]
    host_key_alias: str = ""
    connect_timeout: float | None = None
    proxy_command: str = ""             # %h %p %r %n %% expanded
    via: tuple["Endpoint", ...] = ()    # ProxyJump hops, the first one first
    unhonoured: tuple[str, ...] = field(default=(), compare=False)


def _split(args: str) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError as exc:
        raise SshConfigError(f"cannot split ssh arguments {args!r}: {exc}") from None


def ansible_argv(host_vars: Mapping[str, Any], defaults: SshDefaults = SshDefaults()) -> list[str]:
    """The options Ansible's ssh connection puts before the host name, for `ssh -G`."""
    args = _split(str(host_vars.get("ansible_ssh_args") or defaults.ssh_args or ""))
    port = host_vars.get("ansible_port") or host_vars.get("ansible_ssh_port") or defaults.remote_port
    if port:
        args += ["-o", f"Port={int(port)}"]
    key = host_vars.get("ansible_ssh_private_key_file") or host_vars.get("ansible_private_key_file") \
        or defaults.private_key_file
    if key:
        args += ["-o", f"IdentityFile={os.path.expanduser(str(key))}"]
    user = host_vars.get("ansible_user") or host_vars.get("ansible_ssh_user") or defaults.remote_user
    if user:
        args += ["-o", f"User={user}"]
    args += ["-o", f"ConnectTimeout={defaults.timeout}"]
    for name in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        args += _split(str(host_vars.get(name) or ""))
    return args


def _config_file(argv: list[str]) -> str | None:
    """The -F file of an ssh command line (ssh passes it on to its ProxyJump children)."""
    for i, word in enumerate(argv):
        if word == "-F" and i + 1 < len(argv):
            return argv[i + 1]
        if word.startswith("-F") and len(word) > 2:
            return word[2:]
    return None


def _ssh() -> str:
    found = shutil.which("ssh")
    if not found:
        raise SshConfigError("opsctl resolves SSH settings as OpenSSH does and needs its client: "
                             "apt-get install openssh-client")
    return found


def dump(argv: list[str], host: str) -> dict[str, list[str]]:
    """`ssh -G ARGV HOST`: every setting ssh would use, name -> values (IdentityFile repeats)."""
    proc = subprocess.run([_ssh(), "-G", *argv, "--", host], capture_output=True, text=True, timeout=10,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise SshConfigError(f"ssh -G {host}: {detail}")
    settings: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key.lower(), []).append(value)
    return settings


def paths(values: Iterable[str]) -> tuple[Path, ...]:
    words = [w for value in values for w in value.split()]
    if [w.lower() for w in words] == ["none"]:
        return ()
    return tuple(Path(os.path.expanduser(w)) for w in words)


def _expand(command: str, hostname: str, port: int, user: str, name: str) -> str:
    """ProxyCommand's tokens, as ssh expands them before running it."""
    out, i = [], 0
    tokens = {"h": hostname, "p": str(port), "r": user, "n": name, "%": "%"}
    while i < len(command):
        if command[i] == "%" and i + 1 < len(command) and command[i + 1] in tokens:
            out.append(tokens[command[i + 1]])
            i += 2
        else:
            out.append(command[i])
            i += 1
    return "".join(out)


def _jump_spec(spec: str) -> tuple[str, str, str]:
    """[user@]host[:port] or ssh://[user@]host[:port] -> (user, host, port)."""
    spec = spec.removeprefix("ssh://")
    user, _, rest = spec.rpartition("@")
    host, port = rest, ""
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail.removeprefix(":")
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    return user, host, port


def _unhonoured(settings: Mapping[str, list[str]]) -> tuple[str, ...]:
    found = []
    for key, what in _UNHONOURED.items():
        values = [v for v in settings.get(key, []) if v.lower() not in _UNSET]
        if values:
            found.append(what)
    return tuple(found)


def endpoint(name: str, settings: Mapping[str, list[str]], config_file: str | None,
             hops: dict[str, "Endpoint"] | None = None) -> Endpoint:
    """An Endpoint from ssh -G's settings; its ProxyJump hops resolved too (each once per run
    when `hops` is shared)."""
    def one(key: str, default: str = "") -> str:
        return (settings.get(key) or [default])[0]

    hostname, port, user = one("hostname", name), int(one("port", "22")), one("user")
    timeout = one("connecttimeout", "none")
    jump, proxy = one("proxyjump", "none"), one("proxycommand", "none")
    via: tuple[Endpoint, ...] = ()
    if jump.lower() != "none":
        via = resolve_jump(jump, config_file, {} if hops is None else hops)
    return Endpoint(
        name=name, hostname=hostname, port=port, user=user,
        identity_files=paths(settings.get("identityfile", [])),
        identities_only=one("identitiesonly", "no").lower() == "yes",
        known_hosts=paths(settings.get("userknownhostsfile", [])),
        global_known_hosts=paths(settings.get("globalknownhostsfile", [])),
        host_key_alias=one("hostkeyalias", "none") if one("hostkeyalias", "none").lower() != "none" else "",
        connect_timeout=None if timeout.lower() == "none" else float(timeout),
        proxy_command="" if via or proxy.lower() == "none" else _expand(proxy, hostname, port, user, name),
        via=via, unhonoured=_unhonoured(settings))


def resolve_jump(jump: str, config_file: str | None, hops: dict[str, Endpoint]) -> tuple[Endpoint, ...]:
    """The hops of a ProxyJump list, first one first: ssh reaches the last entry through the ones
    before it (its child is `ssh -J REST -W host:port LAST`), each resolved from the config file."""
    specs = [s.strip() for s in jump.split(",") if s.strip()]
    key = f"{config_file or ''}\0{jump}"
    if key in hops:
        return hops[key].via + (hops[key],)
    user, host, port = _jump_spec(specs[-1])
    argv = (["-F", config_file] if config_file else []) + (["-l", user] if user else []) \
        + (["-p", port] if port else []) + (["-J", ",".join(specs[:-1])] if len(specs) > 1 else [])
    last = endpoint(specs[-1], dump(argv, host), config_file, hops)
    hops[key] = last
    return last.via + (last,)


def resolve(host_vars: Mapping[str, Any], address: str, defaults: SshDefaults = SshDefaults(),
            hops: dict[str, Endpoint] | None = None) -> Endpoint:
    """How Ansible's ssh connection would reach ADDRESS (the host's ansible_host)."""
    argv = ansible_argv(host_vars, defaults)
    return endpoint(address, dump(argv, address), _config_file(argv), hops)


def resolve_many(hosts: list[tuple[Mapping[str, Any], str]], defaults: SshDefaults = SshDefaults(),
                 workers: int = 16) -> list[Endpoint | SshConfigError]:
    """resolve() for every (host vars, address), in parallel (ssh -G takes a few ms each); a host
    whose settings ssh refuses gets its error instead of an Endpoint."""
    if not hosts:
        return []
    _ssh()
    hops: dict[str, Endpoint] = {}   # a bastion resolved once (a race only repeats the work)

    def one(item: tuple[Mapping[str, Any], str]) -> Endpoint | SshConfigError:
        try:
            return resolve(item[0], item[1], defaults, hops)
        except SshConfigError as exc:
            return exc
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(hosts)))) as pool:
        found = list(pool.map(one, hosts))
    return found
