"""Bring a lab up, take it down, say how it is. Every step is safe to repeat."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from opsctl.errors import OpsctlError
from opsctl.lab import labinventory, rootfs, system
from opsctl.lab.health import HostHealth, check_fleet, sshd_answers
from opsctl.lab.spec import LabHost, LabSpec, build_spec, default_subnets, validate_name
from opsctl.paths import labs_dir

Report = Callable[[str], None]
BOOT_TIMEOUT = 30.0


def _spec_file(name: str) -> Path:
    return labs_dir() / name / "lab.json"


def load_spec(name: str) -> LabSpec | None:
    path = _spec_file(validate_name(name))
    return LabSpec.from_json(path.read_text()) if path.exists() else None


def _preflight(php: rootfs.PhpInstall | None, bastion: bool, balancer: str) -> None:
    system.require_root()
    missing = system.missing_prerequisites(php.version if php else None, bastion, balancer)
    if missing:
        raise OpsctlError("the lab needs Debian packages that are missing; run: "
                          f"apt-get install -y {' '.join(missing)}")


def _check_subnet_free(spec: LabSpec) -> None:
    for subnet in filter(None, (spec.subnet, spec.mgmt_subnet)):
        network = ipaddress.ip_network(subnet)
        for iface, cidr in system.addresses_in_use():
            if iface != spec.bridge and ipaddress.ip_interface(cidr).network.overlaps(network):
                raise OpsctlError(f"subnet {subnet} overlaps {cidr} on {iface}: pick another with --subnet")


def _free_subnet(name: str) -> str:
    """The first of NAME's subnets that no address on this machine is in (a new lab)."""
    in_use = [ipaddress.ip_interface(cidr).network for _, cidr in system.addresses_in_use()]
    for subnet in default_subnets(name):
        if not any(ipaddress.ip_network(subnet).overlaps(network) for network in in_use):
            return subnet
    raise OpsctlError("every 10.213.x.0/24 is in use: give the lab a network with --subnet")


def _controller_key(spec: LabSpec) -> str:
    if not spec.key_file.exists():
        spec.path.mkdir(parents=True, exist_ok=True)
        spec.path.chmod(0o700)
        system.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"opsctl-lab-{spec.name}",
                   "-f", str(spec.key_file))
    return Path(f"{spec.key_file}.pub").read_text()


def _ensure_bridge(spec: LabSpec) -> None:
    if not system.link_exists(spec.bridge):
        system.run("ip", "link", "add", spec.bridge, "type", "bridge")
    cidr = f"{spec.gateway}/{spec.prefixlen}"
    if cidr not in system.run("ip", "-o", "-4", "addr", "show", "dev", spec.bridge).stdout:
        system.run("ip", "addr", "add", cidr, "dev", spec.bridge)
    system.run("ip", "link", "set", spec.bridge, "up")
    if spec.mgmt_subnet:
        # The management network is the bastion's alone: the controller has no route to it, and
        # nothing sent to it leaves this machine.
        system.run("ip", "route", "replace", "unreachable", spec.mgmt_subnet)


def _remove_host(host: LabHost) -> None:
    if host.netns in system.netns_list():
        system.kill_netns_processes(host.netns)
        system.run("ip", "netns", "del", host.netns, check=False)
    if system.link_exists(host.veth):
        system.run("ip", "link", "del", host.veth, check=False)


def _boot_host(spec: LabSpec, host: LabHost, boot: Path) -> None:
    system.run("ip", "netns", "add", host.netns)
    system.run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
    system.run("ip", "link", "set", host.veth, "master", spec.bridge, "up")
    system.run("ip", "-n", host.netns, "addr", "add", f"{host.address}/{spec.prefixlen}", "dev", "eth0")
    if spec.mgmt_subnet:
        system.run("ip", "-n", host.netns, "addr", "add", f"{spec.management_address(host)}/{spec.prefixlen}",
                   "dev", "eth0")
    system.run("ip", "-n", host.netns, "link", "set", "eth0", "up")
    system.run("ip", "-n", host.netns, "link", "set", "lo", "up")
    base = spec.host_dir(host)
    system.start_detached(
        ["ip", "netns", "exec", host.netns, "unshare", "--mount", "--uts", "--pid", "--fork",
         "/bin/sh", str(boot), host.name, str(base / "merged"), str(base / "upper"),
         str(base / "work"), str(labs_dir())],
        base / "console.log")


def _restart_services(host: LabHost) -> None:
    """Start whatever died on a running host (sshd killed by a fault test, say)."""
    init = system.pid_namespace_init(host.netns)
    if init is not None:
        system.run("nsenter", "-t", str(init), "-m", "-u", "-n", "-p", "-r", "-w",
                   "/bin/sh", "/etc/opsctl-lab/services.sh", check=False)


def _wait_for_sshd(spec: LabSpec) -> None:
    deadline = time.monotonic() + BOOT_TIMEOUT
    pending = list(spec.hosts)
    while pending and time.monotonic() < deadline:
        with ThreadPoolExecutor(max_workers=min(32, len(pending))) as pool:
            answered = list(pool.map(lambda h: sshd_answers(h, timeout=1.0), pending))
        pending = [h for h, ok in zip(pending, answered) if not ok]
        if pending:
            time.sleep(0.2)
    if pending:
        names = ", ".join(h.name for h in pending)
        logs = ", ".join(str(spec.host_dir(h) / "console.log") for h in pending[:2])
        raise OpsctlError(f"sshd did not answer on {names} within {BOOT_TIMEOUT:.0f}s; see {logs}")


def wait_healthy(name: str, timeout: float = 10.0) -> tuple[LabSpec, list[HostHealth]]:
    deadline = time.monotonic() + timeout
    while True:
        spec, health = status(name)
        if all(h.healthy for h in health) or time.monotonic() > deadline:
            return spec, health
        time.sleep(0.2)


def _write_known_hosts(spec: LabSpec) -> None:
    lines = [f"{h.reach} {rootfs.host_public_key(spec, h)}\n" for h in spec.hosts]
    spec.known_hosts.write_text("".join(lines))
    spec.known_hosts.chmod(0o600)


def _shape(spec: LabSpec) -> str:
    return (f"{len(spec.by_role('web'))} {spec.flavor} web hosts behind {spec.balancer}"
            f"{' and a bastion' if spec.bastion else ''}")


def _deploy_password(spec: LabSpec) -> str:
    """The sudo password of the lab's non-root user, made once per lab (a file only root reads)."""
    if not spec.deploy_password_file.exists():
        spec.deploy_password_file.write_text(secrets.token_urlsafe(18))
        spec.deploy_password_file.chmod(0o600)
    return spec.deploy_password_file.read_text()


def up(name: str, web: int, subnet: str | None, report: Report, flavor: str = "debian",
       bastion: bool = False, balancer: str = "nginx") -> LabSpec:
    php = rootfs.detect_php_fpm()
    _preflight(php, bastion, balancer)
    assert php is not None
    existing = load_spec(name)
    wanted = build_spec(name, web, subnet or (None if existing else _free_subnet(name)), labs_dir(), flavor,
                        bastion, balancer)
    spec = existing or wanted
    if existing and _shape(existing) != _shape(wanted):
        raise OpsctlError(f"lab {name!r} is up with {_shape(existing)}; "
                          f"run `opsctl lab down --name {name}` first to change it")
    _check_subnet_free(spec)
    pubkey = _controller_key(spec)
    password = _deploy_password(spec) if spec.bastion else ""
    spec.control_dir.mkdir(mode=0o700, exist_ok=True)
    if existing is None:
        # An earlier lab of this name that was never taken down may have left SSH masters whose
        # peers are gone: with the same addresses, a new connection would wait on them.
        _kill_controller_processes(spec.path)
    _spec_file(name).write_text(spec.to_json())
    boot = rootfs.install_boot_script(spec)
    _ensure_bridge(spec)
    present = system.netns_list()
    for host in spec.hosts:
        if host.netns in present and system.pid_namespace_init(host.netns) is not None:
            _restart_services(host)
            continue
        report(f"booting {host.name} ({host.role}) at {host.address}")
        _remove_host(host)
        rootfs.prepare(spec, host, php, pubkey, password)
        _boot_host(spec, host, boot)
    _wait_for_sshd(spec)
    _write_known_hosts(spec)
    labinventory.write(spec, datetime.now(timezone.utc))
    return spec


def _kill_controller_processes(root: Path) -> None:
    """ssh ControlPersist masters and the like that still point at the lab's keys."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) + "/" in cmdline and "opsctl" not in cmdline.split(" ")[0]:
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def down(name: str, report: Report) -> None:
    """Remove every namespace, link, process and file of a lab, also after a crash."""
    system.require_root()
    validate_name(name)
    root = labs_dir() / name
    spec = load_spec(name)
    prefix = f"opsctl-{name}-"
    for netns in sorted(n for n in system.netns_list() if n.startswith(prefix)):
        report(f"removing {netns}")
        system.kill_netns_processes(netns)
        system.run("ip", "netns", "del", netns, check=False)
    for link in system.links_with_prefix(f"ov-{name}-") + system.links_with_prefix(f"olb-{name}"):
        if link in (f"olb-{name}",) or link.startswith(f"ov-{name}-"):
            system.run("ip", "link", "del", link, check=False)
    _kill_controller_processes(root)
    if spec is not None and spec.mgmt_subnet:
        system.run("ip", "route", "del", "unreachable", spec.mgmt_subnet, check=False)
    leftover = system.mounts_below(root)
    for point in sorted(leftover, reverse=True):
        system.run("umount", "-l", point, check=False)
    if system.mounts_below(root):
        raise OpsctlError(f"mounts remain below {root}; not deleting it: {system.mounts_below(root)}")
    if root.exists():
        shutil.rmtree(root)


def status(name: str) -> tuple[LabSpec, list[HostHealth]]:
    spec = load_spec(name)
    if spec is None:
        raise OpsctlError(f"lab {name!r} is not up: run `opsctl lab up`")
    present = system.netns_list()
    running = {h.name: h.netns in present and system.pid_namespace_init(h.netns) is not None
               for h in spec.hosts}
    return spec, check_fleet(spec, running)
