"""What a lab is made of: names, addresses and where its files live. Pure data, no side effects."""

from __future__ import annotations

import ipaddress
import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from opsctl.errors import OpsctlError

_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
BASTION_OFFSET = 5
LB_OFFSET = 10
WEB_OFFSET = 20
MAX_WEB = 200
UPSTREAM = "opsctl_web"
# How a lab's web hosts are laid out: Debian's packages; php-fpm and nginx built from source
# under a prefix (/usr/local/php, /usr/local/nginx: php-src's init script, nginx started by hand);
# or Debian's packages with a second pool and a second master under a panel's root
# (/www/server/php/74, its pool inside php-fpm.conf, php-src's init script as php-fpm-74).
FLAVORS = ("debian", "source", "multi", "rhel")
# What the lb host balances with: Debian's nginx (an upstream of the web hosts), or Debian's
# HAProxy (the package's haproxy.cfg, its admin socket, a backend of the web hosts with an HTTP
# health check) in its place.
BALANCERS = ("nginx", "haproxy")


@dataclass(frozen=True)
class LabHost:
    name: str
    role: str  # "lb", "web" or "bastion"
    address: str
    netns: str
    veth: str
    # In a lab with a bastion: the host's address on the management network, where its sshd
    # listens and which only the bastion reaches. "" where sshd listens on `address`.
    ssh_address: str = ""

    @property
    def reach(self) -> str:
        """The address SSH connects to."""
        return self.ssh_address or self.address


@dataclass(frozen=True)
class LabSpec:
    name: str
    subnet: str
    hosts: tuple[LabHost, ...]
    root: str  # state directory of this lab
    flavor: str = "debian"  # one of FLAVORS, for every web host
    mgmt_subnet: str = ""   # a lab with a bastion: the management network behind it
    balancer: str = "nginx"  # one of BALANCERS, for the lb host

    @property
    def bastion(self) -> LabHost | None:
        return next(iter(self.by_role("bastion")), None)

    @property
    def ssh_config(self) -> Path:
        """An ssh_config for the lab's hosts, as a user would write one (labinventory.py)."""
        return self.path / "ssh_config"

    @property
    def control_dir(self) -> Path:
        """ControlPath directory of the lab's Ansible connections: `down` ends their masters."""
        return self.path / "cp"

    @property
    def deploy_password_file(self) -> Path:
        """The sudo password of the lab's non-root user (a lab with a bastion)."""
        return self.path / "deploy.password"

    @property
    def bridge(self) -> str:
        return f"olb-{self.name}"

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen

    @property
    def path(self) -> Path:
        return Path(self.root)

    def host_dir(self, host: LabHost) -> Path:
        return self.path / "hosts" / host.name

    @property
    def key_file(self) -> Path:
        return self.path / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.path / "known_hosts"

    @property
    def inventory_dir(self) -> Path:
        return self.path / "inventory"

    def management_address(self, host: LabHost) -> str:
        """A host's address on the management network: its own address's offset there."""
        offset = int(ipaddress.ip_address(host.address)) - int(ipaddress.ip_network(self.subnet).network_address)
        return str(ipaddress.ip_network(self.mgmt_subnet).network_address + offset)

    def by_role(self, role: str) -> list[LabHost]:
        return [h for h in self.hosts if h.role == role]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "LabSpec":
        data = json.loads(text)
        data["hosts"] = tuple(LabHost(**h) for h in data["hosts"])
        return cls(**data)


def validate_name(name: str) -> str:
    if not _NAME.match(name):
        raise OpsctlError(f"lab name {name!r}: use 1-8 lowercase letters or digits, starting with a letter")
    return name


def default_subnets(name: str) -> Iterator[str]:
    """The /24s a lab of NAME may take, best first: its own (from a hash of the name, so that
    several labs run side by side), then the next ones round, for when two names hash alike."""
    first = 0 if name == "lab" else zlib.crc32(name.encode()) % 250 + 1
    for step in range(251):
        yield f"10.213.{(first + step) % 251}.0/24"


def management_subnet(network: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
    """The management network of a lab with a bastion: the lab's subnet one /16 further up
    (10.213.7.0/24 -> 10.214.7.0/24). The controller gets an unreachable route to it."""
    return ipaddress.ip_network(f"{network.network_address + (1 << 16)}/{network.prefixlen}")


def build_spec(name: str, web: int, subnet: str | None, root: Path, flavor: str = "debian",
               bastion: bool = False, balancer: str = "nginx") -> LabSpec:
    validate_name(name)
    if flavor not in FLAVORS:
        raise OpsctlError(f"--flavor {flavor}: use one of {', '.join(FLAVORS)}")
    if balancer not in BALANCERS:
        raise OpsctlError(f"--balancer {balancer}: use one of {', '.join(BALANCERS)}")
    if not 1 <= web <= MAX_WEB:
        raise OpsctlError(f"--web {web}: a lab has 1 to {MAX_WEB} web hosts")
    try:
        network = ipaddress.ip_network(subnet or next(default_subnets(name)))
    except ValueError as exc:
        raise OpsctlError(f"--subnet: {exc}") from None
    if network.version != 4 or network.prefixlen > 24:
        raise OpsctlError(f"--subnet {network}: give an IPv4 network of /24 or larger")
    base = network.network_address


    def host(hname: str, role: str, offset: int, index: int) -> LabHost:
        return LabHost(name=hname, role=role, address=str(base + offset),
                       netns=f"opsctl-{name}-{hname}", veth=f"ov-{name}-{index}")

    hosts = [host("bastion1", "bastion", BASTION_OFFSET, MAX_WEB + 1)] if bastion else []
    hosts += [host("lb1", "lb", LB_OFFSET, 0)]
    hosts += [host(f"web{i}", "web", WEB_OFFSET + i, i) for i in range(1, web + 1)]
    spec = LabSpec(name=name, subnet=str(network), hosts=tuple(hosts), root=str(root / name), flavor=flavor,
                   mgmt_subnet=str(management_subnet(network)) if bastion else "", balancer=balancer)
    if not bastion:
        return spec
    # Every host but the bastion is reached (and its sshd listens) on the management network.
    return replace(spec, hosts=tuple(h if h.role == "bastion" else replace(h, ssh_address=spec.management_address(h))
                                     for h in hosts))
