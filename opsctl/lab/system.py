"""The few system calls the lab needs: commands, namespaces, links, processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from opsctl.errors import OpsctlError

# Binary -> Debian package that provides it, to tell the user exactly what to install.
REQUIRED = {
    "ip": "iproute2",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "chroot": "coreutils",
    "ssh-keygen": "openssh-client",
    "ssh": "openssh-client",
    "/usr/sbin/sshd": "openssh-server",
    "/usr/sbin/nginx": "nginx",
    "ss": "iproute2",
}


def missing_prerequisites(php_fpm: str | None, bastion: bool = False, balancer: str = "nginx") -> list[str]:
    """Debian packages to install, empty when everything is there."""
    packages = [pkg for binary, pkg in REQUIRED.items() if not shutil.which(binary)]
    if balancer == "haproxy" and not shutil.which("/usr/sbin/haproxy"):
        packages.append("haproxy")
    if bastion and not shutil.which("sudo"):   # the non-root user behind the bastion becomes root with it
        packages.append("sudo")
    if php_fpm is None:
        packages.append("php8.2-fpm")
    return sorted(set(packages))


def require_root() -> None:
    if os.geteuid() != 0:
        raise OpsctlError("the lab needs root (network namespaces, mounts): run it with sudo or as root")


def run(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True)
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise OpsctlError(f"{' '.join(args)}: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc


def netns_list() -> set[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def netns_pids(netns: str) -> list[int]:
    out = run("ip", "netns", "pids", netns, check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def pid_namespace_init(netns: str) -> int | None:
    """PID (in our namespace) of the lab host's PID 1: the netns process whose NSpid ends in 1."""
    for pid in netns_pids(netns):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                return pid
    return None


def kill_netns_processes(netns: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while (pids := netns_pids(netns)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    if netns_pids(netns):
        raise OpsctlError(f"processes of {netns} did not exit: see `ip netns pids {netns}`")


def link_exists(name: str) -> bool:
    return run("ip", "link", "show", name, check=False, quiet=True).returncode == 0


def links_with_prefix(prefix: str) -> list[str]:
    out = run("ip", "-o", "link", "show", check=False).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
    return [n for n in names if n.startswith(prefix)]


def addresses_in_use() -> list[tuple[str, str]]:
    """(interface, CIDR) of every IPv4 address in the root namespace."""
    out = run("ip", "-o", "-4", "addr", "show", check=False).stdout
    pairs = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) > 3:
            pairs.append((fields[1], fields[3]))
    return pairs


def mounts_below(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    return [p for p in points if p.startswith(prefix) or p == str(path)]


def start_detached(args: list[str], log: Path) -> None:
    """Start a process that outlives opsctl, its output in `log`."""
    with open(log, "ab") as out:
        subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True)
