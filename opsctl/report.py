"""Tables and JSON for people and scripts; no logic about hosts lives here."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import format_duration

from opsctl.inventory import Inventory
from opsctl.lab.health import HostHealth
from opsctl.lab.spec import LabSpec
from opsctl.profile import EventProfile
from opsctl.safetext import plain


def _mark(value: bool | None) -> Text:
    return {True: Text("yes", "green"), False: Text("no", "red"), None: Text("-", "dim")}[value]


def _profile_line(profile: EventProfile | None) -> Text:
    if profile is None:
        return Text("no event profile", "dim")
    text = (f"{profile.peak_qps:g} qps/host, {profile.typical_ms:g}/{profile.p99_ms:g} ms typ/p99, "
            f"client timeout {profile.client_timeout_s:g}s, {profile.php_worker_memory_mb:g} MB/worker")
    if profile.window:
        text += f", window {profile.window.start:%Y-%m-%d %H:%M} {profile.window.timezone} for {format_duration(profile.window.duration)}"
    return plain(text)


def print_inventory(console: Console, inv: Inventory, verbose: int) -> None:
    hosts = Table(title=plain(f"Hosts in {inv.source}"), title_justify="left")
    for column in ("host", "address", "port", "user", "groups"):
        hosts.add_column(column)
    for host in inv.hosts:
        hosts.add_row(plain(host.name), plain(host.address), str(host.port), plain(host.user), plain(", ".join(host.groups)))
    console.print(hosts)
    groups = Table(title="Event profiles", title_justify="left")
    groups.add_column("group")
    groups.add_column("hosts", justify="right")
    groups.add_column("profile")
    if verbose:
        groups.add_column("from")
    for group in inv.groups:
        if group.name in ("all", "ungrouped") and not group.profile:
            continue
        row = [plain(group.name), str(len(group.hosts)), _profile_line(group.profile)]
        groups.add_row(*(row + [plain(group.profile_source)] if verbose else row))
    console.print(groups)


def inventory_json(inv: Inventory) -> dict[str, Any]:
    return {
        "source": str(inv.source),
        "hosts": [{"name": h.name, "address": h.address, "port": h.port, "user": h.user,
                   "groups": list(h.groups)} for h in inv.hosts],
        "groups": [{"name": g.name, "hosts": list(g.hosts),
                    "profile": g.profile.as_dict() if g.profile else None,
                    "profile_source": g.profile_source or None} for g in inv.groups],
    }


def print_lab_status(console: Console, spec: LabSpec, health: list[HostHealth]) -> None:
    behind = f", behind bastion1 (management network {spec.mgmt_subnet})" if spec.mgmt_subnet else ""
    behind += f", balancer {spec.balancer}" if spec.balancer != "nginx" else ""
    table = Table(title=f"lab {spec.name} ({spec.subnet}{behind}), inventory: --inventory {spec.name}",
                  title_justify="left")
    for column in ("host", "role", "address", "running", "sshd", "nginx", "php-fpm"):
        table.add_column(column)
    for h in health:
        table.add_row(plain(h.name), h.role, h.address, _mark(h.running), _mark(h.sshd), _mark(h.nginx), _mark(h.php_fpm))
    console.print(table)


def print_logrotate_plan(console: Console, plans: list) -> None:
    table = Table(title="Log rotation plan (times in the window's time zone)", title_justify="left")
    for column in ("host", "behind", "rotate", "prune", "slot", "window", "moved for"):
        table.add_column(column)
    for p in plans:
        s = p.slot
        table.add_row(plain(p.host), plain(p.balancers), plain(f"{s.rotate} {s.timezone}"), plain(s.prune),
                      f"{s.index + 1}/{s.pool_size}", plain(s.window), plain(s.moved_for or "-"))
    console.print(table)
    avoided = sorted({p.slot.avoids for p in plans if p.slot.avoids})
    console.print(plain("Event windows kept clear (prepare margin included): " + ("; ".join(avoided) or "none declared")))
