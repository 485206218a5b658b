"""Run one script on many hosts over SSH, fast: a bounded thread pool, one connection and one
round trip per host, host keys always checked against known_hosts as OpenSSH reads it
(opsctl/hostkeys.py), whatever Ansible is configured to do.

Each host is reached as Ansible's ssh connection reaches it (opsctl/sshconfig.py: ssh_config,
ansible.cfg, the inventory's ssh arguments). A jump host is connected once per run and every
host behind it is reached through that connection. become runs sudo; with a become password,
the password answers sudo's own prompt on the channel, never on a command line.

A failure on one host (unreachable, refused, bad host key, authentication, sudo, timeout) is
that host's one-line error; every other host still runs.
"""

from __future__ import annotations

import os
import secrets as tokens
import shlex
import socket
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import paramiko

from opsctl import hostkeys, sshconfig
from opsctl.vault import HOW
from opsctl.sshconfig import Endpoint, SshConfigError, SshDefaults, secrets_of

MAX_OUTPUT = 16 * 1024 * 1024  # a probe prints tens of KB; anything near this is a runaway


@dataclass(frozen=True)
class Secrets:
    """A host's passwords from the inventory (vault or not): sent on the wire only, never in a
    repr, an error, a log, an artifact or a cache."""
    password: str = field(default="", repr=False)          # ansible_password: SSH login
    become_password: str = field(default="", repr=False)   # ansible_become_password: sudo -S


@dataclass(frozen=True)
class Target:
    """Where and how to reach one host, as Ansible's ssh connection would (opsctl/sshconfig.py)."""
    name: str
    endpoint: Endpoint
    become: bool = False
    become_user: str = ""
    secrets: Secrets = field(default=Secrets(), repr=False, compare=False)
    problem: str = ""        # a setting that keeps opsctl from reaching the host: its error

    # What the rest of opsctl reads of the endpoint.
    @property
    def address(self) -> str:
        return self.endpoint.hostname

    @property
    def port(self) -> int:
        return self.endpoint.port

    @property
    def user(self) -> str:
        return self.endpoint.user

    @property
    def known_hosts(self) -> tuple[Path, ...]:
        return self.endpoint.known_hosts

    @property
    def global_known_hosts(self) -> tuple[Path, ...]:
        return self.endpoint.global_known_hosts

    @property
    def host_key_alias(self) -> str:
        return self.endpoint.host_key_alias

    @property
    def key_file(self) -> Path | None:
        return self.endpoint.identity_files[0] if self.endpoint.identity_files else None

    @property
    def known_hosts_files(self) -> tuple[Path, ...]:
        return _book_files(self.endpoint)


def _book_files(endpoint: Endpoint) -> tuple[Path, ...]:
    return endpoint.known_hosts + endpoint.global_known_hosts


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0   # TCP connect plus SSH handshake and authentication, per hop
    host: float = 20.0     # the whole exchange with one host
    run: float = 120.0     # the whole fleet


@dataclass
class ExecResult:
    host: str
    ok: bool
    stdout: str = ""
    stderr: str = ""
    exit_status: int | None = None
    error: str = ""        # one line, set when ok is False
    elapsed: float = 0.0


_USER_DEFAULTS = tuple(Path(os.path.expanduser(p)) for p in hostkeys.USER_FILES)


def _target(name: str, host_vars: Mapping[str, Any], endpoint: Endpoint, passwords: Mapping[str, str]) -> Target:
    own = host_vars.get("opsctl_known_hosts")
    if own and endpoint.known_hosts == _USER_DEFAULTS:
        # The inventory names the files and neither ssh_config nor the ssh arguments do.
        endpoint = replace(endpoint, known_hosts=sshconfig.paths([str(own)]))
    become = str(host_vars.get("ansible_become", False)).lower() in ("true", "yes", "1")
    method = str(host_vars.get("ansible_become_method") or "sudo")
    problem = ""
    if become and method != "sudo":
        problem = f"ansible_become_method {method}: opsctl's own connections become root with sudo only"
    if passwords.get("unreadable"):
        problem = f"{passwords['unreadable']} is vault-encrypted and no vault secret opens it: use {HOW}"
    return Target(name=name, endpoint=endpoint, become=become,
                  become_user=str(host_vars.get("ansible_become_user") or ""),
                  secrets=Secrets(**{k: v for k, v in passwords.items() if k != "unreadable"}), problem=problem)


def target_for(name: str, address: str, port: int, user: str, host_vars: Mapping[str, Any],
               defaults: SshDefaults = SshDefaults()) -> Target:
    """One host's Target, with this port and user unless its variables set them."""
    merged = {"ansible_port": port, "ansible_user": user, **{k: v for k, v in host_vars.items() if v is not None}}
    return _target(name, host_vars, sshconfig.resolve(merged, address, defaults), secrets_of(host_vars))


def targets_for(hosts: Iterable[Any], defaults: SshDefaults = SshDefaults()) -> list[Target]:
    """The Targets of inventory hosts (opsctl.inventory.Host), resolved in parallel. A host whose
    settings ssh refuses gets a Target whose problem says so."""
    hosts = list(hosts)
    found = sshconfig.resolve_many([(h.vars, h.address) for h in hosts], defaults)
    targets = []
    for host, endpoint in zip(hosts, found):
        if isinstance(endpoint, SshConfigError):
            stub = Endpoint(name=host.address, hostname=host.address, port=host.port, user=host.user,
                            identity_files=(), identities_only=False, known_hosts=(), global_known_hosts=())
            targets.append(Target(host.name, stub, problem=str(endpoint)))
        else:
            targets.append(_target(host.name, host.vars, endpoint, host.secrets))
    return targets


class JumpFailed(paramiko.SSHException):
    """A jump host could not be reached: the message is the error of every host behind it."""


class BecomeFailed(paramiko.SSHException):
    """sudo did not run the command: the message says why (never with the password)."""


def _where(endpoint: Endpoint) -> str:
    return f"{endpoint.user}@{endpoint.hostname}:{endpoint.port}"


def _classify(exc: BaseException, endpoint: Endpoint, timeouts: Timeouts) -> str:
    where = _where(endpoint)
    if isinstance(exc, (hostkeys.HostKeyRefused, JumpFailed, BecomeFailed)):
        return str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"host key mismatch: {endpoint.hostname} offered a {exc.key.get_name()} key that differs from "
                f"the one in {', '.join(map(str, _book_files(endpoint)))} (host rebuilt, or someone in "
                f"the middle); not connecting")
    if isinstance(exc, paramiko.IncompatiblePeer) and "host key" in str(exc):
        return (f"unknown host key: {endpoint.hostname} offers none of the key types known_hosts records for it; "
                f"not connecting")
    if isinstance(exc, paramiko.AuthenticationException):
        keys = [str(p) for p in endpoint.identity_files if p.is_file()]
        tried = f" with key {', '.join(keys)}" if keys and endpoint.identities_only else ""
        return f"authentication failed for {where}{tried}"
    if isinstance(exc, paramiko.ChannelException):
        return f"unreachable: the jump host could not open a connection to {where}: {exc.text}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"unreachable: no answer from {where} within {timeouts.connect:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return f"refused: nothing accepts SSH on {where}"
    if isinstance(exc, OSError):
        return f"unreachable: {where}: {exc.strerror or exc}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"ssh error on {where}: {text}"


@dataclass
class _Hop:
    lock: threading.Lock = field(default_factory=threading.Lock)
    client: paramiko.SSHClient | None = None
    error: str = ""


class Connector:
    """The SSH connections of one run. A jump host (ProxyJump) is connected once and every host
    behind it is reached through that one connection (a direct-tcpip channel each), as one
    OpenSSH ControlMaster to the bastion would; a ProxyCommand runs once per host, as in ssh."""

    def __init__(self, timeouts: Timeouts, books: dict[tuple, hostkeys.KnownHosts] | None = None) -> None:
        self.timeouts = timeouts
        self._books = books if books is not None else {}
        self._hops: dict[Endpoint, _Hop] = {}
        self._lock = threading.Lock()

    def _known(self, endpoint: Endpoint) -> hostkeys.KnownHosts:
        files = _book_files(endpoint)
        with self._lock:
            if files not in self._books:
                self._books[files] = hostkeys.load(files)
            return self._books[files]

    def _sock(self, endpoint: Endpoint) -> Any:
        if endpoint.via:
            transport = self._hop(endpoint.via[-1]).get_transport()
            assert transport is not None
            return transport.open_channel("direct-tcpip", (endpoint.hostname, endpoint.port), ("127.0.0.1", 0),
                                          timeout=self.timeouts.connect)
        if endpoint.proxy_command:
            return paramiko.ProxyCommand(endpoint.proxy_command)
        return None

    def _hop(self, endpoint: Endpoint) -> paramiko.SSHClient:
        with self._lock:
            hop = self._hops.setdefault(endpoint, _Hop())
        with hop.lock:
            if hop.client is None and not hop.error:
                try:
                    hop.client = self.open(endpoint)
                except Exception as exc:   # every host behind it fails with this one line
                    reason = _classify(exc, endpoint, self.timeouts)
                    hop.error = reason if isinstance(exc, JumpFailed) else f"jump host {endpoint.name}: {reason}"
        if hop.error:
            raise JumpFailed(hop.error)
        assert hop.client is not None
        return hop.client

    def open(self, endpoint: Endpoint, password: str = "") -> paramiko.SSHClient:
        """An authenticated client for ENDPOINT, through its jump hosts; its host key checked."""
        sock = self._sock(endpoint)
        client = paramiko.SSHClient()
        trust = self._known(endpoint).trust(hostkeys.lookup_name(endpoint.hostname, endpoint.port,
                                                                  endpoint.host_key_alias))
        # No host key is loaded into paramiko's tables: every key offered goes to the policy.
        client.set_missing_host_key_policy(hostkeys.TrustPolicy(trust, endpoint.hostname))
        keys = [str(p) for p in endpoint.identity_files if p.is_file()]
        limit = min(self.timeouts.connect, endpoint.connect_timeout or self.timeouts.connect)
        try:
            client.connect(endpoint.hostname, port=endpoint.port, username=endpoint.user, sock=sock,
                           password=password or None, key_filename=keys or None,
                           timeout=limit, banner_timeout=limit, auth_timeout=limit, channel_timeout=limit,
                           allow_agent=not endpoint.identities_only, look_for_keys=False,
                           disabled_algorithms=trust.disabled_algorithms())
        except BaseException:
            client.close()
            raise
        return client

    def close(self) -> None:
        for hop in self._hops.values():
            if hop.client is not None:
                hop.client.close()


def _pull(channel: paramiko.Channel, out: bytearray, err: bytearray, deadline: float) -> bool:
    """Append what the channel has to OUT and ERR, without waiting; whether anything came."""
    if time.monotonic() > deadline:
        raise TimeoutError("host timeout")
    progressed = False
    while channel.recv_ready():
        out += channel.recv(65536)
        progressed = True
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(65536)
        progressed = True
    return progressed


def _read_all(channel: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    while True:
        progressed = _pull(channel, out, err, deadline)
        if len(out) > MAX_OUTPUT:
            raise paramiko.SSHException("output exceeds 16 MB")
        # sshd may send the exit status before the last output it read from the command: the
        # output is complete only at EOF (or close), not at the exit status.
        done = channel.exit_status_ready() and (channel.eof_received or channel.closed)
        if done and not channel.recv_ready() and not channel.recv_stderr_ready():
            return bytes(out), bytes(err)
        if not progressed:
            channel.status_event.wait(0.02)


def remote_command(target: Target, interpreter: str) -> tuple[str, str]:
    """The command the channel runs, and the marker of a sudo that is given a password ("" if none).

    With a become password, sudo reads it from the channel (-S) after its own prompt, which
    carries the marker; the command says the marker once sudo lets it run, and only then is the
    script sent, so a sudo that needs no password never reads the password as script."""
    if not target.become:
        return interpreter, ""
    user = f" -u {shlex.quote(target.become_user)}" if target.become_user else ""
    if not target.secrets.become_password:
        return f"sudo -n{user} {interpreter}", ""
    marker = tokens.token_hex(8)
    started = f"echo OPSCTL-BECOME-{marker}; exec {interpreter}"
    return f"sudo -S -p {shlex.quote(_prompt(marker))}{user} sh -c {shlex.quote(started)}", marker


def _prompt(marker: str) -> str:
    return f"[opsctl sudo {marker}] password:"


def _become(channel: paramiko.Channel, target: Target, marker: str, deadline: float) -> tuple[bytes, bytes]:
    """Answer sudo's prompt with the become password, once, and wait until the command runs.
    What the command wrote after the marker (nothing, usually) is returned, stdout and stderr."""
    prompt, started = _prompt(marker).encode(), f"OPSCTL-BECOME-{marker}\n".encode()
    out, err, answered = bytearray(), bytearray(), False
    who = f"sudo on {target.name} ({target.user})"
    while True:
        progressed = _pull(channel, out, err, deadline)
        if started in out:
            return bytes(out.split(started, 1)[1]), bytes(err.replace(prompt, b""))
        if prompt in err:
            if answered:
                raise BecomeFailed(f"{who} refused the become password (ansible_become_password)")
            channel.sendall(target.secrets.become_password.encode() + b"\n")
            err, answered = err.replace(prompt, b""), True
        elif channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            said = err.decode(errors="replace").strip().splitlines()
            raise BecomeFailed(f"{who} did not run the command: {said[-1][:200] if said else 'no reason given'}")
        if not progressed:
            channel.status_event.wait(0.02)


def _failure_line(target: Target, command: str, status: int, err: bytes) -> str:
    lines = err.decode(errors="replace").strip().splitlines()
    first = (lines or [f"exit status {status}"])[0]
    if target.become and any(line.startswith("sudo:") and "password is required" in line for line in lines):
        return (f"sudo on {target.name} needs a password for {target.user} and none was given: set "
                f"ansible_become_password (in a vault) or allow passwordless sudo")
    return f"{command.split(' -c ')[0]} failed with status {status}: {first[:200]}"


def run_on(target: Target, script: bytes, interpreter: str, timeouts: Timeouts,
           connector: Connector | None = None) -> ExecResult:
    """Send `script` on stdin to `interpreter` on the host, in one round trip (two when a sudo
    password is exchanged)."""
    started = time.monotonic()
    if target.problem:
        return ExecResult(target.name, False, error=target.problem)
    deadline = started + timeouts.host
    command, marker = remote_command(target, interpreter)
    own = connector is None
    connector = connector or Connector(timeouts)
    client = None
    try:
        client = connector.open(target.endpoint, target.secrets.password)
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=timeouts.connect)
        channel.settimeout(max(deadline - time.monotonic(), 0.1))
        channel.exec_command(command)
        head_out, head_err = _become(channel, target, marker, deadline) if marker else (b"", b"")
        channel.sendall(script)
        channel.shutdown_write()
        out, err = _read_all(channel, deadline)
        out, err = head_out + out, head_err + err
        status = channel.recv_exit_status()
        result = ExecResult(target.name, status == 0, out.decode(errors="replace"), err.decode(errors="replace"),
                            status, elapsed=time.monotonic() - started)
        if status != 0:
            result.error = _failure_line(target, command, status, err)
        return result
    except TimeoutError:
        return ExecResult(target.name, False, error=f"timeout: {target.address} did not finish within "
                          f"{timeouts.host:g}s", elapsed=time.monotonic() - started)
    except Exception as exc:  # every failure is this host's one-line error, never the run's
        return ExecResult(target.name, False, error=_classify(exc, target.endpoint, timeouts),
                          elapsed=time.monotonic() - started)
    finally:
        if client is not None:
            client.close()
        if own:
            connector.close()


def _warn(line: str) -> None:
    sys.stderr.write(f"opsctl: warning: {line}\n")


def _endpoints(targets: list[Target]) -> list[Endpoint]:
    """Every endpoint of the run: the targets' and their jump hosts'."""
    found: list[Endpoint] = []
    for target in targets:
        found.extend(target.endpoint.via)
        found.append(target.endpoint)
    return found


def known_hosts_for(targets: list[Target], on_warning: Callable[[str], None] = _warn) -> dict[tuple, hostkeys.KnownHosts]:
    """Each distinct set of known_hosts files read once per run; every unreadable line said once."""
    books: dict[tuple, hostkeys.KnownHosts] = {}
    said: set[str] = set()
    for endpoint in _endpoints(targets):
        files = _book_files(endpoint)
        if files not in books:
            books[files] = hostkeys.load(files)
            for line in books[files].skipped:
                if line not in said:
                    said.add(line)
                    on_warning(f"known_hosts line skipped: {line}")
    return books


def _say_unhonoured(targets: list[Target], on_warning: Callable[[str], None]) -> None:
    """Once per host: the ssh settings opsctl's own connections cannot honour."""
    for target in targets:
        missing = sorted({w for e in (*target.endpoint.via, target.endpoint) for w in e.unhonoured})
        if missing:
            on_warning(f"{target.name}: opsctl's own connections cannot honour {', '.join(missing)} "
                       f"(ssh_config or ssh arguments); connecting without")


def run_many(targets: list[Target], script: bytes, interpreter: str = "sh -s", *,
             timeouts: Timeouts = Timeouts(), workers: int = 32,
             on_result: Callable[[ExecResult], None] | None = None,
             on_warning: Callable[[str], None] = _warn) -> list[ExecResult]:
    """Every target's result, in the order given; hosts still running at the run deadline time out."""
    if not targets:
        return []
    _say_unhonoured(targets, on_warning)
    connector = Connector(timeouts, known_hosts_for(targets, on_warning))
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets))), thread_name_prefix="ssh")
    futures: dict[Future, Target] = {pool.submit(run_on, t, script, interpreter, timeouts, connector): t
                                     for t in targets}
    results: dict[str, ExecResult] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + timeouts.run
    pending = set(futures)
    while pending and time.monotonic() < deadline:
        done, pending = wait(pending, timeout=max(deadline - time.monotonic(), 0), return_when=FIRST_COMPLETED)
        for future in done:
            result = future.result()
            with lock:
                results[result.host] = result
            if on_result:
                on_result(result)
    for future in pending:
        target = futures[future]
        future.cancel()
        result = ExecResult(target.name, False, error=f"timeout: the whole run hit its {timeouts.run:g}s limit "
                            f"before {target.address} answered")
        results[target.name] = result
        if on_result:
            on_result(result)
    # Threads stuck on a dead socket end at their own socket timeout; do not wait for them.
    pool.shutdown(wait=False, cancel_futures=True)
    connector.close()
    return [results[t.name] for t in targets]


