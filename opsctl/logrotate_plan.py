"""`opsctl logrotate plan`: each host's rotation slot, from the same code the role runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from opsctl.errors import OpsctlError
from opsctl.inventory import Inventory
from opsctl.logslots import Slot, fleet_slot
from opsctl.paths import roles_dir


@dataclass(frozen=True)
class HostPlan:
    host: str
    balancers: str
    slot: Slot


def default_window() -> dict[str, Any]:
    """The role's own default, so the plan and the role never disagree."""
    defaults = yaml.safe_load((roles_dir() / "opsctl_logrotate/defaults/main.yml").read_text())
    return defaults["opsctl_logrotate_window"]


def plan(full: Inventory, selected: list[str]) -> list[HostPlan]:
    """Slots for the selected hosts; pools and events come from the whole inventory."""
    host_vars = {h.name: h.vars for h in full.hosts}
    fallback = default_window()
    plans = []
    for host in full.hosts:
        if host.name not in selected:
            continue
        window = host.vars.get("opsctl_logrotate_window") or fallback
        try:
            slot = fleet_slot(host.name, host_vars, window)
        except (ValueError, KeyError) as exc:
            raise OpsctlError(f"{host.name}: {exc}") from None
        balancers = ", ".join(str(b.get("host", b)) for b in host.vars.get("opsctl_balancers") or [])
        plans.append(HostPlan(host=host.name, balancers=balancers or "-", slot=slot))
    return plans
