"""The balancers in front of a web host (`opsctl_balancers`), checked once when the inventory is read.

Each entry names the balancer's inventory host, the driver type and the upstream that holds this
backend, plus what its driver reads (plugin_utils/balancer_entries.py: one rule, which the drain
role applies too). Every command that reads the list (the rolling reload, log-rotation pools)
can then rely on its shape.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.balancer_entries import DRIVERS, balancers_problem

from opsctl.errors import OpsctlError

VAR_NAME = "opsctl_balancers"


def drivers() -> tuple[str, ...]:
    """The balancer types the drain role ships (one tasks/<type>.yml each)."""
    return tuple(DRIVERS)


def check_balancers(value: Any, host: str) -> None:
    """Raise OpsctlError naming the host and the entry when `opsctl_balancers` is malformed."""
    problem = balancers_problem(value, f"host {host}: {VAR_NAME}")
    if problem:
        raise OpsctlError(problem)
