"""Does a lab host answer? Plain sockets from the controller, nothing installed on the host."""

from __future__ import annotations

import http.client
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from opsctl.lab.spec import LabHost, LabSpec


@dataclass(frozen=True)
class HostHealth:
    name: str
    role: str
    address: str
    running: bool
    sshd: bool
    nginx: bool | None    # None: a bastion, which runs sshd only
    php_fpm: bool | None  # None: not a web host

    @property
    def healthy(self) -> bool:
        return self.running and self.sshd and self.nginx is not False and self.php_fpm is not False


def ssh_banner(address: str, timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=timeout) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def sshd_listening(host: LabHost) -> bool:
    """A host behind the lab's bastion: its sshd listens on the management network, which the
    controller cannot reach (that is the point), so look inside its network namespace."""
    proc = subprocess.run(["ip", "netns", "exec", host.netns, "ss", "-Hltn", "sport = :22"],
                          capture_output=True, text=True, timeout=10)
    return proc.returncode == 0 and f"{host.ssh_address}:22" in proc.stdout


def sshd_answers(host: LabHost, timeout: float = 2.0) -> bool:
    return sshd_listening(host) if host.ssh_address else ssh_banner(host.address, timeout)


def http_get(address: str, path: str, timeout: float = 3.0) -> tuple[int, str]:
    """(status, body), or (0, error) when nothing answered."""
    conn = http.client.HTTPConnection(address, 80, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)
    finally:
        conn.close()


def check_host(host: LabHost, running: bool) -> HostHealth:
    nginx = None
    if host.role != "bastion":
        status, _ = http_get(host.address, "/") if running else (0, "")
        nginx = status > 0
    php = None
    if host.role == "web":
        code, body = http_get(host.address, "/health.php") if running else (0, "")
        php = code == 200 and body.startswith("ok ")
    return HostHealth(host.name, host.role, host.address, running, running and sshd_answers(host), nginx, php)


def check_fleet(spec: LabSpec, running: dict[str, bool]) -> list[HostHealth]:
    with ThreadPoolExecutor(max_workers=min(32, len(spec.hosts))) as pool:
        return list(pool.map(lambda h: check_host(h, running[h.name]), spec.hosts))
