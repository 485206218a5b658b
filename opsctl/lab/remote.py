"""A command on a lab host over SSH, for the lab's tests and benchmarks: through the lab's own
ssh_config (its key, its known_hosts, its bastion when it has one), so that whatever reaches a
lab host goes the way a user's ssh would, host keys checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

from opsctl.lab.spec import LabHost, LabSpec


def _host(spec: LabSpec, host: LabHost | str) -> LabHost:
    name = host if isinstance(host, str) else host.name
    return next(h for h in spec.hosts if h.name == name)


def ssh_argv(spec: LabSpec, host: LabHost | str, command: str, *, known_hosts: Path | str | None = None,
             user: str = "root") -> list[str]:
    """ssh's command line for COMMAND on HOST (given as a LabHost or its name), as root by default."""
    override = ["-o", f"UserKnownHostsFile={known_hosts}"] if known_hosts else []
    return ["ssh", "-F", str(spec.ssh_config), "-o", "BatchMode=yes", "-o", "ControlMaster=no", *override,
            f"{user}@{_host(spec, host).reach}", command]


def run(spec: LabSpec, host: LabHost | str, command: str, *, timeout: float = 60,
        known_hosts: Path | str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(ssh_argv(spec, host, command, known_hosts=known_hosts), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
