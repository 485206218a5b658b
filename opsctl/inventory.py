"""Read Ansible inventories with Ansible's own machinery into typed hosts and groups."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Mapping

from opsctl import inventory_cache
from opsctl.balancers import VAR_NAME as BALANCERS_VAR, check_balancers
from opsctl.errors import OpsctlError
from opsctl.paths import resolve_inventory
from opsctl.profile import VAR_NAME, EventProfile, ProfileError, parse_profile


class InventoryError(OpsctlError):
    """An inventory that cannot be read, or a --limit that matches nothing."""


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int
    user: str
    groups: tuple[str, ...]
    vars: Mapping[str, Any] = field(repr=False)
    profile: EventProfile | None = None

    @property
    def become(self) -> bool:
        return bool(self.vars.get("ansible_become", False))


@dataclass(frozen=True)
class Group:
    name: str
    hosts: tuple[str, ...]
    profile: EventProfile | None
    profile_source: str = ""


@dataclass(frozen=True)
class Inventory:
    source: Path
    hosts: tuple[Host, ...]
    groups: tuple[Group, ...]

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)


_PLUGIN_FAILURE = re.compile(r"Failed to parse inventory with '([\w.]+)' plugin: (.+)")
_UNPARSED = re.compile(r"Unable to parse (.+?) as an inventory source")


def _condense_warnings(text: str, source: Path) -> str | None:
    """Turn Ansible's multi-line parse warnings into one line, or None when all parsed."""
    unparsed = _UNPARSED.findall(text)
    if not unparsed:
        return None
    failures = _PLUGIN_FAILURE.findall(text)
    # The plugin that matches the file's format gives the useful reason.
    preferred = {".ini": "ini", ".yml": "yaml", ".yaml": "yaml", ".json": "yaml", "": "ini"}
    want = preferred.get(Path(unparsed[0]).suffix, "")
    reason = next((msg for plugin, msg in failures if plugin == want), None)
    reason = reason or (failures[0][1] if failures else "not a valid inventory")
    return f"{unparsed[0]}: cannot parse inventory: {reason.strip()}"


def _load_manager(source: Path):
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    captured = io.StringIO()
    loader = DataLoader()
    try:
        # Ansible reports parse failures as warnings on stderr; keep them to say it in one line.
        with contextlib.redirect_stderr(captured):
            manager = InventoryManager(loader=loader, sources=[str(source)])
            variables = VariableManager(loader=loader, inventory=manager)
    except AnsibleError as exc:
        raise InventoryError(_condense_warnings(captured.getvalue(), source)
                             or f"{source}: {str(exc).splitlines()[0]}") from None
    problem = _condense_warnings(captured.getvalue(), source)
    if problem:
        raise InventoryError(problem)
    return loader, manager, variables


def _var_origin(source: Path, kind: str, name: str) -> str:
    """The file that most likely defines opsctl_event for a group or host, for error messages."""
    base = source if source.is_dir() else source.parent
    candidates = [base / kind / name] + [base / kind / f"{name}{ext}" for ext in (".yml", ".yaml", ".json")]
    for candidate in candidates:
        files = sorted(candidate.rglob("*")) if candidate.is_dir() else [candidate]
        for path in files:
            if path.is_file() and VAR_NAME in path.read_text(errors="replace"):
                return str(path)
    return str(source)


def _profile(value: Any, origin: str) -> EventProfile | None:
    if value is None:
        return None
    try:
        return parse_profile(value)
    except ProfileError as exc:
        raise ProfileError(f"{origin}: {exc}") from None


def _plain(value: Any) -> Any:
    """Ansible's tagged strings and containers as plain JSON values: they cross a pipe and a cache."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (datetime, date)):  # a YAML timestamp (an event window's start)
        return value.isoformat()
    try:
        return str(value)
    except Exception:  # a vaulted value without its secret: opsctl never reads those itself
        return f"<unreadable {type(value).__name__}>"


def _group_snapshots(source: Path, loader, manager) -> list[dict[str, Any]]:
    from ansible.utils.vars import combine_vars
    from ansible.vars.plugins import get_vars_from_inventory_sources

    groups = []
    for name, group in sorted(manager.groups.items()):
        own = combine_vars(group.get_vars(),
                           get_vars_from_inventory_sources(loader, [str(source)], [group], "all"))
        groups.append({"name": name, "hosts": [h.name for h in group.get_hosts()],
                       "event": _plain(own.get(VAR_NAME)), "origin": _var_origin(source, "group_vars", name),
                       "defines_event": VAR_NAME in own})
    return groups


def _host_snapshot(source: Path, ansible_host, variables) -> dict[str, Any]:
    merged = variables.get_vars(host=ansible_host, include_hostvars=False)
    port = merged.get("ansible_port") or merged.get("ansible_ssh_port") or 22
    return {"name": ansible_host.name, "address": str(merged.get("ansible_host", ansible_host.name)),
            "port": int(port), "user": str(merged.get("ansible_user") or merged.get("ansible_ssh_user") or "root"),
            "groups": sorted(g.name for g in ansible_host.get_groups() if g.name != "all"),
            "vars": _plain(dict(merged)), "origin": _var_origin(source, "host_vars", ansible_host.name)}


def ansible_snapshot(source: Path, limit: str | None = None) -> dict[str, Any]:
    """What Ansible's parser makes of an inventory, as plain data (no Ansible types)."""
    loader, manager, variables = _load_manager(source)
    selected = manager.get_hosts(limit or "all")
    if limit and not selected:
        raise InventoryError(f"--limit {limit!r} matches no host in {source}")
    return {"groups": _group_snapshots(source, loader, manager),
            "hosts": [_host_snapshot(source, h, variables) for h in selected]}


def from_snapshot(source: Path, snapshot: Mapping[str, Any]) -> Inventory:
    """Typed hosts and groups, event profiles validated (errors name the file that defines them)."""
    groups = tuple(Group(name=g["name"], hosts=tuple(g["hosts"]), profile=_profile(g["event"], g["origin"]),
                         profile_source=g["origin"] if g["defines_event"] else "")
                   for g in snapshot["groups"])
    hosts = []
    for h in snapshot["hosts"]:
        origin = h["origin"]
        if origin == str(source):
            origin = next((g.profile_source for g in groups
                           if g.name in h["groups"] and g.profile_source), str(source))
        check_balancers(h["vars"].get(BALANCERS_VAR), h["name"])
        hosts.append(Host(name=h["name"], address=h["address"], port=h["port"], user=h["user"],
                          groups=tuple(h["groups"]), vars=h["vars"],
                          profile=_profile(h["vars"].get(VAR_NAME), origin)))
    return Inventory(source=source, hosts=tuple(hosts), groups=groups)


def _cached(source: Path, limit: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """The cache key for the inventory as it is on disk (None: not cacheable) and its entry, if any."""
    key = inventory_cache.key_for(source, limit)
    return key, inventory_cache.read(key) if key else None


def _parse_and_store(source: Path, limit: str | None, key: str | None) -> dict[str, Any]:
    snapshot = ansible_snapshot(source, limit)
    if key:
        inventory_cache.write(key, snapshot)
    return snapshot


def load_inventory(name_or_path: str, limit: str | None = None) -> Inventory:
    """Load an inventory by name or path; `limit` is an Ansible host pattern."""
    source = resolve_inventory(name_or_path)
    key, snapshot = _cached(source, limit)
    return from_snapshot(source, snapshot if snapshot is not None else _parse_and_store(source, limit, key))


def load_inventory_soon(name_or_path: str, limit: str | None = None) -> Callable[[], Inventory]:
    """Start loading the inventory; call the result to get it.

    Unchanged inventories come from opsctl's cache at once. Otherwise importing Ansible and
    parsing take about half a second of one CPU: in a forked process that overlaps with what
    the caller does meanwhile (importing paramiko, compiling the check catalog) on the other
    CPU. Errors are raised when the result is asked for, as load_inventory raises them.
    """
    source = resolve_inventory(name_or_path)
    key, cached = _cached(source, limit)
    if cached is not None:
        return lambda: from_snapshot(source, cached)
    try:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
        future = pool.submit(_parse_and_store, source, limit, key)
    except (OSError, ValueError):
        return lambda: from_snapshot(source, _parse_and_store(source, limit, key))

    def result() -> Inventory:
        try:
            return from_snapshot(source, future.result())
        finally:
            pool.shutdown(wait=False)
    return result
