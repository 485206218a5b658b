"""Host keys, checked the way OpenSSH checks them, for every SSH connection opsctl makes itself
(`check`, `harden`'s probe and `--explain`); and what turns checking off for the Ansible runs
opsctl starts.

known_hosts is read as ssh(1) reads it: every user file (UserKnownHostsFile, default
~/.ssh/known_hosts and ~/.ssh/known_hosts2) and every global file (GlobalKnownHostsFile,
default /etc/ssh/ssh_known_hosts and ssh_known_hosts2); hashed names (|1|salt|hash); a host on
another port than 22 as `[host]:port`; comma-separated patterns with `*`, `?` and `!` negation;
`@revoked` keys are refused even when another line lists them; `@cert-authority` lines are
understood but host certificates are not verified (paramiko cannot), so a host trusted only
through a CA is refused with a message that says so. A line that cannot be read is skipped and
reported, never a reason to distrust every other line. Files are parsed line by line here
because paramiko's HostKeys.load gives up on the whole file at the first marker line.

Ansible's own connections are Ansible's: opsctl cannot check their keys. When an ansible.cfg,
the environment or the inventory turns checking off (host_key_checking = False,
StrictHostKeyChecking=no or accept-new, the paramiko connection's host_key_auto_add), opsctl
refuses to run the playbook unless the hosts carry `opsctl_accept_unchecked_host_keys: true`,
and then says so in one warning line per run.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import paramiko
from paramiko.hostkeys import HostKeyEntry

USER_FILES = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_FILES = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")
REVOKED, AUTHORITY = "@revoked", "@cert-authority"
ACCEPT_VAR = "opsctl_accept_unchecked_host_keys"
# The host key algorithms a recorded key type can be offered under (RSA keys sign with SHA-2).
_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}


class HostKeyRefused(paramiko.SSHException):
    """The host's key is not one known_hosts trusts for it; the message is the host's error."""


def _glob(pattern: str) -> re.Pattern[str]:
    """OpenSSH's match_pattern: `*` and `?` only (no [classes]: `[host]:port` is literal)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(regex, re.IGNORECASE | re.DOTALL)


def _matchers(patterns: Iterable[str]) -> tuple[tuple[bool, re.Pattern[str]], ...]:
    return tuple((p.startswith("!"), _glob(p[1:] if p.startswith("!") else p)) for p in patterns)


def _match(name: str, matchers: Iterable[tuple[bool, re.Pattern[str]]]) -> bool:
    """OpenSSH's match_hostname: a matching negated pattern wins over every positive one."""
    found = False
    for negated, regex in matchers:
        if regex.fullmatch(name):
            if negated:
                return False
            found = True
    return found


def match_host(name: str, patterns: Iterable[str]) -> bool:
    return _match(name, _matchers(patterns))


@dataclass(frozen=True)
class Entry:
    """One usable known_hosts line: where it is, its marker, its host patterns and its key."""
    source: str                  # path:line
    marker: str                  # "", "@revoked" or "@cert-authority"
    patterns: tuple[str, ...]    # as written; a hashed entry has exactly one |1|salt|hash
    keytype: str
    blob: bytes
    # Prepared once per line, since a fleet's check looks every host up in every line: the
    # compiled patterns, and for a hashed name the HMAC keyed with its salt and the digest.
    matchers: tuple[tuple[bool, re.Pattern[str]], ...] = field(default=(), compare=False, repr=False)
    hashed_parts: tuple[Any, bytes] | None = field(default=None, compare=False, repr=False)

    @property
    def hashed(self) -> bool:
        return self.patterns[0].startswith("|1|")

    @property
    def plain_names(self) -> tuple[str, ...]:
        """The names of a line with neither hashing nor wildcards nor negation, else ()."""
        return () if self.hashed or self.matchers else tuple(p.lower() for p in self.patterns)

    def matches(self, name: str) -> bool:
        if self.hashed_parts is not None:
            # What paramiko's HostKeys.hash_host computes (HMAC-SHA1 of the name), without
            # decoding the salt again for every host.
            keyed, digest = self.hashed_parts
            mac = keyed.copy()
            mac.update(name.encode())
            return hmac.compare_digest(mac.digest(), digest)
        if self.matchers:
            return _match(name, self.matchers)
        return name.lower() in self.plain_names

    def key(self) -> paramiko.PKey | None:
        """The key object, or None when this paramiko cannot use the type (OpenSSH skips those too)."""
        line = f"x {self.keytype} {base64.b64encode(self.blob).decode()}"
        try:
            entry = HostKeyEntry.from_line(line)
        except Exception:   # key data that does not parse as its type: the line is unusable
            return None
        return entry.key if entry is not None else None


def lookup_name(address: str, port: int, alias: str = "") -> str:
    """The name ssh looks up: HostKeyAlias as given, else the host, as `[host]:port` off port 22."""
    if alias:
        return alias
    return address if port == 22 else f"[{address}]:{port}"


def _hashed(field_: str) -> tuple[Any, bytes] | None:
    """(HMAC-SHA1 keyed with the salt, digest) of a `|1|salt|hash` name, or None when it is not one."""
    parts = field_.split("|")
    try:
        salt, digest = (base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True))
    except (binascii.Error, ValueError, IndexError):
        return None
    if len(parts) != 4 or parts[1] != "1" or not len(salt) == len(digest) == 20:
        return None
    return hmac.new(salt, digestmod="sha1"), digest


def parse_line(text: str, source: str) -> tuple[Entry | None, str]:
    """(the entry, "") for a usable line, (None, "") for a blank or comment, (None, why) else."""
    words = text.split()
    if not words or words[0].startswith("#"):
        return None, ""
    marker = ""
    if words[0].startswith("@"):
        marker, words = words[0], words[1:]
        if marker not in (REVOKED, AUTHORITY):
            return None, f"unknown marker {marker[:40]!r}"
    if len(words) < 3:
        return None, "expected host patterns, a key type and a key"
    patterns = tuple(p for p in words[0].split(",") if p)
    hashed = _hashed(patterns[0]) if patterns and patterns[0].startswith("|") else None
    if not patterns or (patterns[0].startswith("|") and (len(patterns) > 1 or hashed is None)):
        return None, "unreadable host name field"
    try:
        blob = base64.b64decode(words[2], validate=True)
    except (binascii.Error, ValueError):
        return None, "the key is not valid base64"
    wild = not patterns[0].startswith("|") and any(c in p for p in patterns for c in "*?!")
    return Entry(source, marker, patterns, words[1], blob, _matchers(patterns) if wild else (),
                 hashed), ""


@dataclass(frozen=True)
class KnownHosts:
    """Every usable line of a set of known_hosts files, and the lines skipped with why."""
    files: tuple[Path, ...]
    entries: tuple[Entry, ...] = ()
    skipped: tuple[str, ...] = ()        # "path:line: why", or "path: cannot read: ..."
    by_name: dict[str, list[Entry]] = field(default_factory=dict, compare=False, repr=False)
    others: tuple[Entry, ...] = field(default=(), compare=False, repr=False)   # hashed or patterned

    def __post_init__(self) -> None:
        # An index of the plain names: one dict lookup per host instead of a scan of every line.
        others = []
        for entry in self.entries:
            for name in entry.plain_names:
                self.by_name.setdefault(name, []).append(entry)
            if not entry.plain_names:
                others.append(entry)
        object.__setattr__(self, "others", tuple(others))

    def trust(self, name: str) -> "Trust":
        matching = self.by_name.get(name.lower(), []) + [e for e in self.others if e.matches(name)]
        matching = list(dict.fromkeys(matching))     # a line naming the host twice counts once
        keys = [(e, e.key()) for e in matching]
        revoked = tuple(k for e, k in keys if k is not None and e.marker == REVOKED)
        plain = tuple((e.source, k) for e, k in keys if k is not None and not e.marker and k not in revoked)
        return Trust(name=name, files=self.files, keys=plain, revoked=revoked,
                     authorities=tuple(e.source for e in matching if e.marker == AUTHORITY))


def load(files: Iterable[Path]) -> KnownHosts:
    """Read the files in order; a missing one is skipped as ssh skips it."""
    paths = tuple(files)
    entries: list[Entry] = []
    skipped: list[str] = []
    for path in paths:
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            continue
        except OSError as exc:
            skipped.append(f"{path}: cannot read: {exc.strerror or exc}")
            continue
        for number, line in enumerate(text.splitlines(), 1):
            entry, why = parse_line(line, f"{path}:{number}")
            if entry is not None:
                entries.append(entry)
            elif why:
                skipped.append(f"{path}:{number}: {why}")
    return KnownHosts(paths, tuple(entries), tuple(skipped))


@dataclass(frozen=True)
class Trust:
    """What known_hosts says about one host name."""
    name: str
    files: tuple[Path, ...]
    keys: tuple[tuple[str, paramiko.PKey], ...] = ()   # (source, key): recorded, not revoked
    revoked: tuple[paramiko.PKey, ...] = ()
    authorities: tuple[str, ...] = field(default=())    # sources of @cert-authority lines for it

    def disabled_algorithms(self) -> dict[str, list[str]]:
        """Offer only the recorded key types, as ssh prefers them: a host with an RSA key on
        record must not be judged by the ed25519 key it would otherwise offer first."""
        wanted = {a for _, k in self.keys for a in _ALGORITHMS.get(k.get_name(), (k.get_name(),))}
        if not wanted:
            return {}
        return {"keys": [a for a in paramiko.Transport._preferred_keys if a not in wanted]}

    def where(self) -> str:
        return ", ".join(str(p) for p in self.files) or "no known_hosts file (UserKnownHostsFile none)"

    def verify(self, address: str, key: paramiko.PKey) -> None:
        """Return when `key` is trusted for this host; raise with the host's one-line error."""
        if key in self.revoked:
            raise HostKeyRefused(f"revoked host key: {address} offered a {key.get_name()} key that known_hosts "
                                 f"marks @revoked; not connecting")
        if any(key == k for _, k in self.keys):
            return
        if self.keys:
            same = [source for source, k in self.keys if k.get_name() == key.get_name()] or [self.keys[0][0]]
            raise HostKeyRefused(f"host key mismatch: {address} offered a {key.get_name()} key that differs from "
                                 f"the one recorded at {same[0]} (host rebuilt, or someone in the middle); "
                                 f"not connecting")
        if self.authorities:
            raise HostKeyRefused(f"unknown host key: {address} is trusted only through @cert-authority "
                                 f"({self.authorities[0]}); opsctl cannot verify host certificates: add "
                                 f"the host's own key to known_hosts")
        name = "" if self.name == address else f" (as {self.name})"
        raise HostKeyRefused(f"unknown host key: {address}{name} is not in {self.where()}; add its key first")


class TrustPolicy(paramiko.MissingHostKeyPolicy):
    """The only place opsctl accepts a host key: paramiko's own host key tables stay empty, so
    every key it is offered comes here and is judged against known_hosts."""

    def __init__(self, trust: Trust, address: str) -> None:
        self.trust, self.address = trust, address

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        self.trust.verify(self.address, key)


# --- Ansible's connections -------------------------------------------------------------------

_OFF = {"no", "off", "false", "accept-new"}
_SSH = {"ssh", "ansible.builtin.ssh", "smart"}
_PARAMIKO = {"paramiko", "paramiko_ssh", "ansible.builtin.paramiko_ssh"}


def ssh_options(args: str, name: str) -> list[str]:
    """Every value of `-o Name=value`, `-oName=value` or `-o "Name value"` in an ssh argument
    string, in order (ssh uses the first)."""
    try:
        words = shlex.split(args)
    except ValueError:
        words = args.split()
    found = []
    for i, word in enumerate(words):
        option = words[i + 1] if word == "-o" and i + 1 < len(words) else (word[2:] if word.startswith("-o") else "")
        parts = re.split(r"\s*=\s*|\s+", option.strip(), maxsplit=1)
        if len(parts) == 2 and parts[0].lower() == name.lower() and parts[1].strip():
            found.append(parts[1].strip())
    return found


def _where(option: str, origin: str) -> tuple[str, str]:
    """The setting's name as the user wrote it, and where: an ansible.cfg, the environment, the inventory."""
    if origin.startswith("env: "):
        return origin[5:], "the environment"
    if origin.startswith("var: "):
        return origin[5:], "the inventory"
    return option, origin


def _set(option: str, origin: str, value: Any) -> str:
    name, place = _where(option, origin)
    return f"{name}={value} in {place}"


def _in_args(option: str, origin: str, value: str) -> str:
    name, place = _where(option, origin)
    return f"StrictHostKeyChecking={value} in {name} ({place})"


def _setting(config: Any, name: str, plugin: str, host_vars: Mapping[str, Any]) -> tuple[Any, str]:
    return config.get_config_value_and_origin(name, plugin_type="connection", plugin_name=plugin,
                                              variables=dict(host_vars))


def _ssh_unchecked(config: Any, host_vars: Mapping[str, Any]) -> str | None:
    """ssh uses the first StrictHostKeyChecking it is given; Ansible builds its command line as
    ssh_args, then `-o StrictHostKeyChecking=no` when host_key_checking is off, then the
    common and extra args."""
    checking, checking_origin = _setting(config, "host_key_checking", "ssh", host_vars)
    sources: list[tuple[str, str]] = []
    args, origin = _setting(config, "ssh_args", "ssh", host_vars)
    sources += [(v, _in_args("ssh_args", origin, v))
                for v in ssh_options(str(args or ""), "StrictHostKeyChecking")]
    if not _boolean(checking):
        sources.append(("no", _set("host_key_checking", checking_origin, checking)))
    for option in ("ssh_common_args", "ssh_extra_args"):
        args, origin = _setting(config, option, "ssh", host_vars)
        sources += [(v, _in_args(option, origin, v))
                    for v in ssh_options(str(args or ""), "StrictHostKeyChecking")]
    return sources[0][1] if sources and sources[0][0].lower() in _OFF else None


def _ssh_config_unchecked(ssh_args: str, host_vars: Mapping[str, Any], name: str) -> str | None:
    """What ssh_config (~/.ssh/config, -F, Include, Match) makes of the host, as ssh -G resolves
    Ansible's own command line: StrictHostKeyChecking no there turns Ansible's checking off too."""
    from opsctl import sshconfig

    try:
        argv = sshconfig.ansible_argv(host_vars, sshconfig.SshDefaults(ssh_args=ssh_args))
        value = sshconfig.dump(argv, str(host_vars.get("ansible_host") or name))["stricthostkeychecking"][0]
    except (sshconfig.SshConfigError, KeyError, OSError):
        return None   # ssh itself refuses these settings: Ansible's connection fails before any key is offered
    return f"StrictHostKeyChecking {value} in ssh_config (as ssh -G resolves it)" if value in _OFF else None


def _paramiko_unchecked(config: Any, host_vars: Mapping[str, Any]) -> str | None:
    checking, origin = _setting(config, "host_key_checking", "paramiko_ssh", host_vars)
    if not _boolean(checking):
        return _set("host_key_checking", origin, checking)
    add, origin = _setting(config, "host_key_auto_add", "paramiko_ssh", host_vars)
    return _set("host_key_auto_add", origin, add) if _boolean(add, False) else None


def _boolean(value: Any, default: bool = True) -> bool:
    from ansible.module_utils.parsing.convert_bool import boolean

    if value is None:
        return default
    try:
        return boolean(value, strict=False)
    except TypeError:
        return default


def _by_settings(host_vars: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """What Ansible's own settings say of the host's connection: where they turn host key
    checking off (or None), and, for an ssh connection they leave checked, the ssh_args that
    ssh_config is still to be read with (None: nothing left to read)."""
    from ansible import constants
    from ansible.plugins.loader import connection_loader

    config = constants.config
    connection = str(host_vars.get("ansible_connection") or config.get_config_value("DEFAULT_TRANSPORT"))
    if connection in _SSH:
        connection_loader.get("ssh", class_only=True)   # registers the plugin's options
        where = _ssh_unchecked(config, host_vars)
        return where, None if where else str(_setting(config, "ssh_args", "ssh", host_vars)[0] or "")
    if connection in _PARAMIKO:
        connection_loader.get("paramiko_ssh", class_only=True)
        return _paramiko_unchecked(config, host_vars), None
    return None, None   # local, containers, ...: no SSH host key involved


def unchecked_by(host_vars: Mapping[str, Any], name: str = "") -> str | None:
    """Where Ansible's connection to host NAME is told not to check its host key, or None."""
    where, ssh_args = _by_settings(host_vars)
    return where or (_ssh_config_unchecked(ssh_args, host_vars, name) if ssh_args is not None else None)


@dataclass(frozen=True)
class AnsibleCheck:
    """The hosts whose Ansible connection skips host key checks, and whether all are accepted."""
    unchecked: dict[str, str]      # host -> where checking is turned off
    refused: list[str]             # those without opsctl_accept_unchecked_host_keys: true

    def summary(self, hosts: list[str]) -> str:
        first = hosts[0]
        more = f" (and {len(hosts) - 1} more host(s))" if len(hosts) > 1 else ""
        return f"{first}{more}: {self.unchecked[first]}"


def check_ansible(host_vars: Mapping[str, Mapping[str, Any]]) -> AnsibleCheck:
    unchecked, pending = {}, {}
    for host, hv in host_vars.items():   # Ansible's configuration: read in this thread
        where, ssh_args = _by_settings(hv)
        if where:
            unchecked[host] = where
        elif ssh_args is not None:
            pending[host] = ssh_args
    # One ssh -G per host takes ~10 ms: a fleet's are run side by side, not one after another.
    with ThreadPoolExecutor(max_workers=16) as pool:
        found = pool.map(lambda h: _ssh_config_unchecked(pending[h], host_vars[h], h), list(pending))
        unchecked.update((h, where) for h, where in zip(list(pending), found) if where)
    unchecked = {h: unchecked[h] for h in host_vars if h in unchecked}   # the inventory's order
    refused = [h for h in unchecked if not _boolean(host_vars[h].get(ACCEPT_VAR), False)]
    return AnsibleCheck(unchecked, refused)


def guard_ansible(host_vars: Mapping[str, Mapping[str, Any]]) -> str:
    """Before a playbook runs: raise when a configuration turns host key checking off for any
    host that has not accepted it; else the warning line to print ("" when checking is on)."""
    from opsctl.errors import OpsctlError

    found = check_ansible(host_vars)
    if found.refused:
        raise OpsctlError(f"host key checking is off for Ansible's connection to {found.summary(found.refused)}: "
                          f"Ansible would talk to any machine that answers at that address. Turn it back on, "
                          f"or set {ACCEPT_VAR}: true for these hosts to run anyway")
    if found.unchecked:
        return (f"opsctl: warning: host key checking is off for Ansible's connection to "
                f"{found.summary(list(found.unchecked))} (accepted by {ACCEPT_VAR})")
    return ""
