"""What a lab is made of: names, addresses and where its files live. Pure data, no side effects."""

from __future__ import annotations

import ipaddress
import json
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

from opsctl.errors import OpsctlError

_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
LB_OFFSET = 10
WEB_OFFSET = 20
MAX_WEB = 200
UPSTREAM = "opsctl_web"
# How a lab's web hosts are laid out: Debian's packages; php-fpm and nginx built from source
# under a prefix (/usr/local/php, /usr/local/nginx: php-src's init script, nginx started by hand);
# or Debian's packages with a second pool and a second master under a panel's root
# (/www/server/php/74, its pool inside php-fpm.conf, php-src's init script as php-fpm-74).
FLAVORS = ("debian", "source", "multi", "rhel")


@dataclass(frozen=True)
class LabHost:
    name: str
    role: str  # "lb" or "web"
    address: str
    netns: str
    veth: str


@dataclass(frozen=True)
class LabSpec:
    name: str
    subnet: str
    hosts: tuple[LabHost, ...]
    root: str  # state directory of this lab
    flavor: str = "debian"  # one of FLAVORS, for every web host

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


def default_subnet(name: str) -> str:
    """A /24 per lab name, so that several labs can run side by side."""
    third = 0 if name == "lab" else zlib.crc32(name.encode()) % 250 + 1
    return f"10.213.{third}.0/24"


def build_spec(name: str, web: int, subnet: str | None, root: Path, flavor: str = "debian") -> LabSpec:
    validate_name(name)
    if flavor not in FLAVORS:
        raise OpsctlError(f"--flavor {flavor}: use one of {', '.join(FLAVORS)}")
    if not 1 <= web <= MAX_WEB:
        raise OpsctlError(f"--web {web}: a lab has 1 to {MAX_WEB} web hosts")
    try:
        network = ipaddress.ip_network(subnet or default_subnet(name))
    except ValueError as exc:
        raise OpsctlError(f"--subnet: {exc}") from None
    if network.version != 4 or network.prefixlen > 24:
        raise OpsctlError(f"--subnet {network}: give an IPv4 network of /24 or larger")
    base = network.network_address

    def host(hname: str, role: str, offset: int, index: int) -> LabHost:
        return LabHost(name=hname, role=role, address=str(base + offset),
                       netns=f"opsctl-{name}-{hname}", veth=f"ov-{name}-{index}")

    hosts = [host("lb1", "lb", LB_OFFSET, 0)]
    hosts += [host(f"web{i}", "web", WEB_OFFSET + i, i) for i in range(1, web + 1)]
    return LabSpec(name=name, subnet=str(network), hosts=tuple(hosts), root=str(root / name), flavor=flavor)
