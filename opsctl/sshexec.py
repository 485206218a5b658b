"""Run one script on many hosts over SSH, fast: a bounded thread pool, one connection and one
round trip per host, host keys always checked against known_hosts as OpenSSH reads it
(opsctl/hostkeys.py), whatever Ansible is configured to do.

A failure on one host (unreachable, refused, bad host key, authentication, timeout) is that
host's one-line error; every other host still runs.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import paramiko

from opsctl import hostkeys

MAX_OUTPUT = 16 * 1024 * 1024  # a probe prints tens of KB; anything near this is a runaway


@dataclass(frozen=True)
class Target:
    """Where and how to reach one host; built from the inventory's host vars."""
    name: str
    address: str
    port: int
    user: str
    known_hosts: tuple[Path, ...]            # the user files, in order
    key_file: Path | None
    become: bool = False
    global_known_hosts: tuple[Path, ...] = tuple(Path(p) for p in hostkeys.GLOBAL_FILES)
    host_key_alias: str = ""

    @property
    def known_hosts_files(self) -> tuple[Path, ...]:
        return self.known_hosts + self.global_known_hosts


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0   # TCP connect plus SSH handshake and authentication
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


def _files(value: str | list | tuple) -> tuple[Path, ...]:
    """UserKnownHostsFile / GlobalKnownHostsFile: several files separated by spaces, or none."""
    if isinstance(value, (list, tuple)):
        words = [str(v) for v in value]
    else:
        try:
            words = shlex.split(str(value))
        except ValueError:
            words = str(value).split()
    if [w.lower() for w in words] == ["none"]:
        return ()
    return tuple(Path(os.path.expanduser(w)) for w in words)


def target_for(name: str, address: str, port: int, user: str, host_vars: Mapping[str, Any]) -> Target:
    """The host's SSH settings as Ansible's ssh would use them (known_hosts files, key, become)."""
    common = " ".join(str(host_vars.get(k) or "") for k in ("ansible_ssh_common_args", "ansible_ssh_extra_args"))

    def option(key: str) -> str | None:
        return next(iter(hostkeys.ssh_options(common, key)), None)   # ssh takes the first

    user_files = option("UserKnownHostsFile") or host_vars.get("opsctl_known_hosts") or hostkeys.USER_FILES
    global_files = option("GlobalKnownHostsFile") or hostkeys.GLOBAL_FILES
    key = host_vars.get("ansible_ssh_private_key_file") or host_vars.get("ansible_private_key_file")
    become = str(host_vars.get("ansible_become", False)).lower() in ("true", "yes", "1")
    return Target(name=name, address=address, port=port, user=user, known_hosts=_files(user_files),
                  key_file=Path(os.path.expanduser(str(key))) if key else None, become=become,
                  global_known_hosts=_files(global_files), host_key_alias=option("HostKeyAlias") or "")


def _classify(exc: BaseException, target: Target, timeouts: Timeouts) -> str:
    where = f"{target.user}@{target.address}:{target.port}"
    if isinstance(exc, hostkeys.HostKeyRefused):
        return str(exc)
    if isinstance(exc, paramiko.BadHostKeyException):
        return (f"host key mismatch: {target.address} offered a {exc.key.get_name()} key that differs from "
                f"the one in {', '.join(map(str, target.known_hosts_files))} (host rebuilt, or someone in "
                f"the middle); not connecting")
    if isinstance(exc, paramiko.IncompatiblePeer) and "host key" in str(exc):
        return (f"unknown host key: {target.address} offers none of the key types known_hosts records for it; "
                f"not connecting")
    if isinstance(exc, paramiko.AuthenticationException):
        key = f" with key {target.key_file}" if target.key_file else ""
        return f"authentication failed for {where}{key}"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return f"unreachable: no answer from {where} within {timeouts.connect:g}s"
    if isinstance(exc, ConnectionRefusedError):
        return f"refused: nothing accepts SSH on {where}"
    if isinstance(exc, OSError):
        return f"unreachable: {where}: {exc.strerror or exc}"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"ssh error on {where}: {text}"


def _client(target: Target, timeouts: Timeouts, known: hostkeys.KnownHosts) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    trust = known.trust(hostkeys.lookup_name(target.address, target.port, target.host_key_alias))
    # No host key is loaded into paramiko's tables: every key offered goes to the policy.
    client.set_missing_host_key_policy(hostkeys.TrustPolicy(trust, target.address))
    client.connect(target.address, port=target.port, username=target.user,
                   key_filename=str(target.key_file) if target.key_file else None,
                   timeout=timeouts.connect, banner_timeout=timeouts.connect, auth_timeout=timeouts.connect,
                   channel_timeout=timeouts.connect, allow_agent=target.key_file is None,
                   look_for_keys=target.key_file is None, disabled_algorithms=trust.disabled_algorithms())
    return client


def _read_all(channel: paramiko.Channel, deadline: float) -> tuple[bytes, bytes]:
    out, err = bytearray(), bytearray()
    while True:
        if time.monotonic() > deadline:
            raise TimeoutError("host timeout")
        progressed = False
        while channel.recv_ready():
            out += channel.recv(65536)
            progressed = True
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
            progressed = True
        if len(out) > MAX_OUTPUT:
            raise paramiko.SSHException("output exceeds 16 MB")
        # sshd may send the exit status before the last output it read from the command: the
        # output is complete only at EOF (or close), not at the exit status.
        done = channel.exit_status_ready() and (channel.eof_received or channel.closed)
        if done and not channel.recv_ready() and not channel.recv_stderr_ready():
            return bytes(out), bytes(err)
        if not progressed:
            channel.status_event.wait(0.02)


def run_on(target: Target, script: bytes, interpreter: str, timeouts: Timeouts,
           known: hostkeys.KnownHosts | None = None) -> ExecResult:
    """Send `script` on stdin to `interpreter` on the host, in one round trip."""
    started = time.monotonic()
    deadline = started + timeouts.host
    command = f"sudo -n {interpreter}" if target.become else interpreter
    client = None
    try:
        client = _client(target, timeouts, known or hostkeys.load(target.known_hosts_files))
        transport = client.get_transport()
        assert transport is not None
        channel = transport.open_session(timeout=timeouts.connect)
        channel.settimeout(max(deadline - time.monotonic(), 0.1))
        channel.exec_command(command)
        channel.sendall(script)
        channel.shutdown_write()
        out, err = _read_all(channel, deadline)
        status = channel.recv_exit_status()
        result = ExecResult(target.name, status == 0, out.decode(errors="replace"), err.decode(errors="replace"),
                            status, elapsed=time.monotonic() - started)
        if status != 0:
            first = (err.decode(errors="replace").strip().splitlines() or [f"exit status {status}"])[0]
            hint = " (sudo -n needs passwordless sudo)" if target.become and "sudo" in first else ""
            result.error = f"{command} failed with status {status}: {first[:200]}{hint}"
        return result
    except TimeoutError:
        return ExecResult(target.name, False, error=f"timeout: {target.address} did not finish within "
                          f"{timeouts.host:g}s", elapsed=time.monotonic() - started)
    except Exception as exc:  # every failure is this host's one-line error, never the run's
        return ExecResult(target.name, False, error=_classify(exc, target, timeouts),
                          elapsed=time.monotonic() - started)
    finally:
        if client is not None:
            client.close()


def _warn(line: str) -> None:
    sys.stderr.write(f"opsctl: warning: {line}\n")


def known_hosts_for(targets: list[Target], on_warning: Callable[[str], None] = _warn) -> dict[tuple, hostkeys.KnownHosts]:
    """Each distinct set of known_hosts files read once per run; every unreadable line said once."""
    books: dict[tuple, hostkeys.KnownHosts] = {}
    said: set[str] = set()
    for target in targets:
        files = target.known_hosts_files
        if files not in books:
            books[files] = hostkeys.load(files)
            for line in books[files].skipped:
                if line not in said:
                    said.add(line)
                    on_warning(f"known_hosts line skipped: {line}")
    return books


def run_many(targets: list[Target], script: bytes, interpreter: str = "sh -s", *,
             timeouts: Timeouts = Timeouts(), workers: int = 32,
             on_result: Callable[[ExecResult], None] | None = None,
             on_warning: Callable[[str], None] = _warn) -> list[ExecResult]:
    """Every target's result, in the order given; hosts still running at the run deadline time out."""
    if not targets:
        return []
    books = known_hosts_for(targets, on_warning)
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets))), thread_name_prefix="ssh")
    futures: dict[Future, Target] = {pool.submit(run_on, t, script, interpreter, timeouts,
                                                 books[t.known_hosts_files]): t for t in targets}
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
    return [results[t.name] for t in targets]


