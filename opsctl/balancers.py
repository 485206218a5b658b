"""The balancers in front of a web host (`opsctl_balancers`), checked once when the inventory is read.

Each entry names the balancer's inventory host, the driver type and the upstream (an HAProxy
backend) that holds this backend; `config` optionally names the file, and for HAProxy `server`
this host's server name and `socket` the admin socket. Every command that reads the list (the rolling
reload, log-rotation pools) can then rely on its shape.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

import yaml

from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import unknown_key_problem
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip

from opsctl.errors import OpsctlError
from opsctl.paths import roles_dir

VAR_NAME = "opsctl_balancers"
_REQUIRED = ("host", "type", "upstream")
_OPTIONAL = ("config", "server", "socket")   # server and socket: the haproxy driver's
# The drain role includes tasks/<type>.yml: a type is a plain name, never a path.
_DRIVER_NAME = re.compile(r"[a-z][a-z0-9_]*")


@lru_cache(maxsize=1)
def drivers() -> tuple[str, ...]:
    """The balancer types the drain role ships: the choices of its own argument spec, so opsctl
    and `ansible-playbook` refuse the same types from one list."""
    spec = yaml.safe_load((roles_dir() / "opsctl_drain" / "meta" / "argument_specs.yml").read_text())
    options = spec["argument_specs"]["main"]["options"]["opsctl_drain_balancers"]["options"]
    return tuple(options["type"]["choices"])


def _driver_problem(kind: str) -> str | None:
    if _DRIVER_NAME.fullmatch(kind) and kind in drivers():
        return None
    return f"{clip(kind)} is not a balancer driver (known: {', '.join(drivers())})"


def check_balancers(value: Any, host: str) -> None:
    """Raise OpsctlError naming the host and the entry when `opsctl_balancers` is malformed."""
    if value in (None, "", []):
        return
    where = f"host {host}: {VAR_NAME}"
    if not isinstance(value, list):
        raise OpsctlError(f"{where}: expected a list of {{host, type, upstream}}, got {type(value).__name__}")
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise OpsctlError(f"{where}[{index}]: expected a mapping with host, type and upstream, "
                              f"got {str(entry)[:40]!r}")
        missing = [k for k in _REQUIRED if not isinstance(entry.get(k), str) or not entry[k].strip()]
        if missing:
            raise OpsctlError(f"{where}[{index}]: {missing[0]!r} must be a non-empty string")
        problem = _driver_problem(entry["type"])
        if problem:
            raise OpsctlError(f"{where}[{index}].type: {problem}")
        unknown = unknown_key_problem(entry, (*_REQUIRED, *_OPTIONAL), f"{where}[{index}]")
        if unknown:
            raise OpsctlError(unknown)
