"""`opsctl logrotate plan`: each host's rotation slot, from the same code the role runs; and the
refusal of bad log rotation values before `logrotate apply` or `harden` touch any host."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from ansible_collections.opsctl.fleet.plugins.plugin_utils.logrotate_vars import problems, templated
from ansible_collections.opsctl.fleet.plugins.plugin_utils.logslots import WINDOW_VAR, Slot, fleet_slot, window_error

from opsctl.errors import OpsctlError
from opsctl.inventory import Host, Inventory, load_inventory
from opsctl.paths import roles_dir
from opsctl.vault import VaultOptions


@dataclass(frozen=True)
class HostPlan:
    host: str
    balancers: str
    slot: Slot


def role_defaults() -> dict[str, Any]:
    """The role's own defaults, so opsctl and the role never disagree."""
    return yaml.safe_load((roles_dir() / "opsctl_logrotate/defaults/main.yml").read_text())


def default_window() -> dict[str, Any]:
    return role_defaults()[WINDOW_VAR]


def _window(host_vars: Mapping[str, Any], fallback: Any) -> Any:
    # As in Ansible: an inventory value, even an empty one, wins over the role's default.
    return host_vars[WINDOW_VAR] if WINDOW_VAR in host_vars else fallback


def host_problems(host: Host) -> list[str]:
    """Why this host's log rotation values cannot be used (templates are left to the role)."""
    window = host.vars.get(WINDOW_VAR)
    found = [] if WINDOW_VAR not in host.vars or templated(window) else [window_error(window)]
    return [p for p in found if p] + problems(host.vars)


def refuse_bad_values(hosts: list[Host]) -> None:
    """One line naming the first host and value, exit 2, before anything runs."""
    bad = [(h.name, found[0]) for h in hosts if (found := host_problems(h))]
    if bad:
        more = f" (and {len(bad) - 1} more host(s))" if len(bad) > 1 else ""
        raise OpsctlError(f"{bad[0][0]}: {bad[0][1]}{more}")


def plan(full: Inventory, selected: list[str]) -> list[HostPlan]:
    """Slots for the selected hosts; pools and events come from the whole inventory."""
    chosen = [h for h in full.hosts if h.name in selected]
    refuse_bad_values(chosen)
    host_vars = {h.name: h.vars for h in full.hosts}
    fallback = default_window()
    plans = []
    for host in chosen:
        window = _window(host.vars, fallback)
        if templated(window):
            raise OpsctlError(f"{host.name}: {WINDOW_VAR} is a Jinja template, which only Ansible "
                              f"resolves: opsctl cannot plan it")
        try:
            slot = fleet_slot(host.name, host_vars, window)
        except (ValueError, KeyError, OverflowError) as exc:
            raise OpsctlError(f"{host.name}: {exc}") from None
        balancers = ", ".join(str(b.get("host", b)) if isinstance(b, Mapping) else str(b)
                              for b in host.vars.get("opsctl_balancers") or [])
        plans.append(HostPlan(host=host.name, balancers=balancers or "-", slot=slot))
    return plans


def refuse_before_apply(inventory: str, selected: Inventory, vault: VaultOptions = VaultOptions()) -> None:
    """What the role would refuse, or fail on, for the selected hosts, as one line (exit 2) before
    `logrotate apply` or `harden` change anything: bad values, and slots that cannot be found
    (too many hosts for the window, no window clear of the events)."""
    refuse_bad_values(list(selected.hosts))
    plannable = [h.name for h in selected.hosts if not templated(_window(h.vars, None))]
    plan(load_inventory(inventory, None, vault), plannable)
