"""What an `opsctl_balancers` entry may hold, per balancer driver: one rule for both sides.

opsctl checks every entry when it reads the inventory (a bad one is a one-line error before any
host is touched); the drain role checks the same entries through the filter
opsctl.fleet.balancer_problem, so `ansible-playbook` and AWX refuse exactly what opsctl refuses.

Every entry names the balancer's inventory host (`localhost` for the controller), its driver
type and the upstream (pool, backend, target group) that holds this backend. The keys a driver
adds are listed in DRIVERS; the drain role ships one tasks/<type>.yml per driver.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import unknown_key_problem
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip

COMMON = ("host", "type", "upstream")
# A command balancer's steps are bounded (the role's opsctl_drain_command_timeout when the entry
# says nothing): long enough for a cloud API call, never endless.
COMMAND_TIMEOUT_MAX = 3600
# A peer reaches inflight.sh as an ss filter: an address, a name or a prefix (an SLB's
# 100.64.0.0/10), nothing a shell or ss would read as more.
_PEER = re.compile(r"([A-Za-z0-9_.:-]+|\[[0-9A-Fa-f:.]+\])(/[0-9]{1,3})?")


@dataclass(frozen=True)
class Driver:
    """The keys a driver reads beyond COMMON: those it needs and those it may take."""
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


DRIVERS: dict[str, Driver] = {
    # Marks the upstream server down in the one file nginx loads that defines it.
    "nginx": Driver(optional=("config",)),
    # Sets the server to drain through HAProxy's runtime API: server name and admin socket, else
    # found from the host's address and the running HAProxy's configuration (config).
    "haproxy": Driver(optional=("config", "server", "socket")),
    # The user's own commands: disable, enable, and optionally "how many sessions are still open".
    "command": Driver(required=("disable", "enable"), optional=("sessions", "timeout", "peers")),
}


def _text_problem(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        return f"{key!r} must be a non-empty string"
    if "\x00" in value:
        return f"{key!r} holds a NUL byte"
    return ""


def _command_problem(entry: Mapping, where: str) -> str:
    if "sessions" in entry and _text_problem(entry["sessions"], "sessions"):
        return f"{where}: {_text_problem(entry['sessions'], 'sessions')}"
    timeout = entry.get("timeout", 1)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= COMMAND_TIMEOUT_MAX:
        return f"{where}.timeout: expected whole seconds from 1 to {COMMAND_TIMEOUT_MAX}, got {clip(timeout)}"
    peers = entry.get("peers", [])
    if not isinstance(peers, list) or not all(isinstance(p, str) and _PEER.fullmatch(p) for p in peers):
        return f"{where}.peers: expected a list of the addresses the balancer connects from, got {clip(peers)}"
    return ""


def entry_problem(entry: Any, where: str) -> str:
    """"WHERE: what is wrong" for the first problem of one `opsctl_balancers` entry, or ""."""
    if not isinstance(entry, Mapping):
        return f"{where}: expected a mapping with host, type and upstream, got {clip(entry)}"
    for key in COMMON:
        problem = _text_problem(entry.get(key), key)
        if problem:
            return f"{where}: {problem}"
    driver = DRIVERS.get(entry["type"])
    if driver is None:
        return f"{where}.type: {clip(entry['type'])} is not a balancer driver (known: {', '.join(DRIVERS)})"
    for key in driver.required:
        problem = _text_problem(entry.get(key), key)
        if problem:
            return f"{where}: {problem} for a {entry['type']} balancer"
    unknown = unknown_key_problem(entry, (*COMMON, *driver.required, *driver.optional), where)
    if unknown:
        return unknown
    return _command_problem(entry, where) if entry["type"] == "command" else ""


def balancers_problem(value: Any, where: str) -> str:
    """The first problem of a whole `opsctl_balancers` list (None or [] is no balancer), or ""."""
    if value in (None, "", []):
        return ""
    if not isinstance(value, list):
        return f"{where}: expected a list of {{host, type, upstream}}, got {type(value).__name__}"
    for index, entry in enumerate(value):
        problem = entry_problem(entry, f"{where}[{index}]")
        if problem:
            return problem
    return ""


def _filter_problem(value: Any, host: str = "") -> str:
    """`opsctl_balancers | opsctl.fleet.balancer_problem(inventory_hostname)`: "" or the first problem."""
    return balancers_problem(value, f"host {host}: opsctl_balancers" if host else "opsctl_balancers")
