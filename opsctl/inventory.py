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
from opsctl.redact import first_line, hide_values, is_secret_name
from opsctl.sshconfig import PASSWORD_VARS, SshDefaults, ansible_defaults, secrets_of
from opsctl.vault import HOW, VaultOptions, install, undecryptable

# The host variables opsctl itself reads, so the only ones a snapshot (and the cache) keeps: how
# to reach the host, and opsctl's own settings. Never a password (opsctl logs in with keys and
# the agent); ansible-playbook reads the inventory itself, with everything in it.
CONNECTION_VARS = frozenset({
    "ansible_host", "ansible_port", "ansible_ssh_port", "ansible_user", "ansible_ssh_user",
    "ansible_become", "ansible_become_user", "ansible_become_method",
    "ansible_ssh_args", "ansible_ssh_common_args", "ansible_ssh_extra_args",
    "ansible_ssh_private_key_file", "ansible_private_key_file",
    "ansible_host_key_checking", "ansible_ssh_host_key_checking", "ansible_connection",
})
OWN_PREFIX = "opsctl_"
# Read as Ansible reads booleans (INI inventories give strings: "false", "no", "off", "0").
BOOLEAN_VARS = frozenset({"ansible_become", "ansible_host_key_checking", "ansible_ssh_host_key_checking",
                          "opsctl_capacity_force"})


def opsctl_reads(name: str) -> bool:
    """Whether a host variable is one opsctl reads (and may keep in its cache)."""
    return (name in CONNECTION_VARS or name.startswith(OWN_PREFIX)) and not is_secret_name(name)


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
    # ansible_password / ansible_become_password, for opsctl's own connections: never cached,
    # printed or logged (opsctl/sshexec.py Secrets).
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def become(self) -> bool:
        return self.flag("ansible_become")

    def flag(self, name: str) -> bool:
        """A boolean variable (BOOLEAN_VARS, already read the way Ansible reads booleans)."""
        return bool(self.vars.get(name, False))


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
    ssh: SshDefaults = SshDefaults()     # ansible.cfg's ssh_args, remote_user, ... for every host

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
    # The parser quotes the line it could not parse, and an INI line can hold a password.
    return f"{unparsed[0]}: cannot parse inventory: {hide_values(reason.strip())}"


def _failure(exc: BaseException, source: Path, secrets: list) -> InventoryError:
    """Ansible's error while reading an inventory as one line naming the file."""
    from ansible.parsing.vault import AnsibleVaultError

    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if any(isinstance(e, AnsibleVaultError) for e in chain):
        path = undecryptable(source, secrets) or source
        if not secrets:
            return InventoryError(f"{path}: vault-encrypted, and no vault secret was given: use {HOW}")
        return InventoryError(f"{path}: cannot decrypt with the vault secrets given: {first_line(chain[0])}")
    # A YAML error says where it was found: its obj is an Origin (a path, a line).
    origins = [getattr(e, "obj", None) for e in chain]
    where = next((o.path for o in origins if isinstance(getattr(o, "path", None), str)), str(source))
    return InventoryError(f"{where}: {first_line(chain[0])}")


def _load_manager(source: Path, vault: VaultOptions):
    from ansible.errors import AnsibleError
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    captured = io.StringIO()
    loader = DataLoader()
    secrets = install(loader, vault)
    try:
        # Ansible reports parse failures as warnings on stderr; keep them to say it in one line.
        with contextlib.redirect_stderr(captured):
            manager = InventoryManager(loader=loader, sources=[str(source)])
            variables = VariableManager(loader=loader, inventory=manager)
    except AnsibleError as exc:
        problem = _condense_warnings(captured.getvalue(), source)
        raise (InventoryError(problem) if problem else _failure(exc, source, secrets)) from None
    problem = _condense_warnings(captured.getvalue(), source)
    if problem:
        raise InventoryError(problem)
    return loader, manager, variables, secrets


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


class _Unreadable(ValueError):
    """A value opsctl reads is vault-encrypted and no secret opens it."""


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
    except Exception:  # an inline !vault value without its secret
        raise _Unreadable(type(value).__name__) from None


def _has_template(value: Any) -> bool:
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(_has_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_template(v) for v in value)
    return False


def _templated(owner: str, values: dict[str, Any], loader,
               scope: Callable[[], Mapping[str, Any]]) -> dict[str, Any]:
    """VALUES with `{{ ... }}` resolved by Ansible's own templating, as a play sees them
    (`ansible_host: "{{ base }}.11"`, lookups); scope() gives the variables, built only if needed."""
    from ansible.errors import AnsibleError
    from ansible.template import Templar

    wanted = [name for name, value in values.items() if _has_template(value)]
    if not wanted:
        return values
    templar = Templar(loader=loader, variables=scope())
    resolved = dict(values)
    for name in wanted:
        try:
            resolved[name] = templar.template(values[name])
        except AnsibleError as exc:
            raise InventoryError(f"{owner}: {name}: cannot resolve {values[name]!r}: {first_line(exc)}") from None
    return resolved


def _booleans(owner: str, values: dict[str, Any]) -> dict[str, Any]:
    """BOOLEAN_VARS as real booleans, by Ansible's own rule; anything else there is bad input."""
    from ansible.module_utils.parsing.convert_bool import boolean

    out = dict(values)
    for name in BOOLEAN_VARS & values.keys():
        try:
            out[name] = boolean(values[name], strict=True)
        except TypeError:
            raise InventoryError(f"{owner}: {name}: {values[name]!r} is not a boolean "
                                 "(true/false, yes/no, on/off, 1/0)") from None
    return out


def _kept(owner: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The variables opsctl reads, as plain data; a vaulted one must be readable."""
    kept = {}
    for name, value in values.items():
        if not opsctl_reads(name):
            continue
        try:
            kept[name] = _plain(value)
        except _Unreadable:
            raise InventoryError(f"{owner}: {name} is vault-encrypted and no vault secret opens it: use {HOW}") from None
    return kept


def _group_snapshots(source: Path, loader, manager) -> list[dict[str, Any]]:
    from ansible.utils.vars import combine_vars
    from ansible.vars.plugins import get_vars_from_inventory_sources

    groups = []
    for name, group in sorted(manager.groups.items()):
        own = combine_vars(group.get_vars(),
                           get_vars_from_inventory_sources(loader, [str(source)], [group], "all"))
        event = own.get(VAR_NAME)
        templated = _has_template(event)
        try:   # with the group's own variables; each host resolves it with all of its own
            event = _templated(f"group {name}", {VAR_NAME: event}, loader, lambda: own)[VAR_NAME]
        except InventoryError:
            pass
        groups.append({"name": name, "hosts": [h.name for h in group.get_hosts()],
                       "event": _kept(f"group {name}", {VAR_NAME: event}).get(VAR_NAME),
                       "origin": _var_origin(source, "group_vars", name), "defines_event": VAR_NAME in own,
                       "templated": templated})
    return groups


def _port(owner: str, values: Mapping[str, Any]) -> int:
    raw = values.get("ansible_port") or values.get("ansible_ssh_port") or 22
    try:
        port = int(raw)
    except (TypeError, ValueError, OverflowError):   # OverflowError: a YAML .inf
        port = 0
    if not 0 < port < 65536 or isinstance(raw, bool):
        raise InventoryError(f"{owner}: ansible_port {raw!r} is not a port number (1-65535)")
    return port


_PASSWORD_NAMES = frozenset(n for names in PASSWORD_VARS.values() for n in names)


def _passwords(name: str, merged: Mapping[str, Any], loader, scope: Callable[[], Mapping[str, Any]]) -> dict[str, str]:
    """The host's connection passwords, resolved and decrypted as Ansible would (a vault, a
    template naming a vaulted variable); a snapshot holding them is never cached. One that no
    vault secret opens is named under "unreadable": only a connection that needs it fails."""
    values, unreadable = {}, []
    for key in sorted(_PASSWORD_NAMES & merged.keys()):
        try:
            values[key] = _plain(_templated(name, {key: merged[key]}, loader, scope)[key])
        except (_Unreadable, InventoryError):
            unreadable.append(key)
    found = secrets_of(values)
    if unreadable:
        found["unreadable"] = ", ".join(unreadable)
    return found


def _host_snapshot(source: Path, ansible_host, loader, variables) -> dict[str, Any]:
    name = ansible_host.name
    merged = variables.get_vars(host=ansible_host, include_hostvars=False)
    raw = {k: v for k, v in merged.items() if opsctl_reads(k)}

    def scope() -> Mapping[str, Any]:
        return variables.get_vars(host=ansible_host, include_hostvars=True)
    own = _booleans(name, _kept(name, _templated(name, raw, loader, scope)))
    return {"name": name, "address": str(own.get("ansible_host") or name), "port": _port(name, own),
            "user": str(own.get("ansible_user") or own.get("ansible_ssh_user") or "root"),
            "groups": sorted(g.name for g in ansible_host.get_groups() if g.name != "all"),
            "vars": own, "origin": _var_origin(source, "host_vars", name),
            "templated": any(_has_template(v) for v in raw.values()),
            "secrets": _passwords(name, merged, loader, scope)}


def ansible_snapshot(source: Path, limit: str | None = None,
                     vault: VaultOptions = VaultOptions()) -> dict[str, Any]:
    """What Ansible's parser makes of an inventory, as plain data (no Ansible types): only the
    variables opsctl reads, templates resolved, booleans read as Ansible reads them."""
    from ansible.errors import AnsibleError

    loader, manager, variables, secrets = _load_manager(source, vault)
    try:
        selected = manager.get_hosts(limit or "all")
        if limit and not selected:
            raise InventoryError(f"--limit {limit!r} matches no host in {source}")
        snapshot = {"groups": _group_snapshots(source, loader, manager), "ssh": ansible_defaults(),
                    "hosts": [_host_snapshot(source, h, loader, variables) for h in selected]}
    except AnsibleError as exc:   # group_vars and host_vars are read here (YAML errors, vault)
        raise _failure(exc, source, secrets) from None
    # A template's answer may come from outside the files the cache key covers (a lookup of
    # the environment, a command): such a snapshot is never stored.
    snapshot["templated"] = any(entry.pop("templated") for entry in snapshot["groups"] + snapshot["hosts"])
    return snapshot


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
                          profile=_profile(h["vars"].get(VAR_NAME), origin), secrets=h.get("secrets") or {}))
    return Inventory(source=source, hosts=tuple(hosts), groups=groups, ssh=SshDefaults.from_dict(snapshot.get("ssh")))


def _cached(source: Path, limit: str | None) -> tuple[str | None, dict[str, Any] | None]:
    """The cache key for the inventory as it is on disk (None: not cacheable) and its entry, if any."""
    key = inventory_cache.key_for(source, limit)
    return key, inventory_cache.read(key) if key else None


def _parse_and_store(source: Path, limit: str | None, key: str | None, vault: VaultOptions) -> dict[str, Any]:
    snapshot = ansible_snapshot(source, limit, vault)
    # Passwords never reach a file: an inventory that holds one is parsed every time.
    if key and not snapshot["templated"] and not any(h["secrets"] for h in snapshot["hosts"]):
        inventory_cache.write(key, snapshot)
    return snapshot


def load_inventory(name_or_path: str, limit: str | None = None, vault: VaultOptions = VaultOptions()) -> Inventory:
    """Load an inventory by name or path; `limit` is an Ansible host pattern."""
    source = resolve_inventory(name_or_path)
    key, snapshot = _cached(source, limit)
    return from_snapshot(source, snapshot if snapshot is not None else _parse_and_store(source, limit, key, vault))


class PendingInventory:
    """An inventory being loaded: call it for the inventory, or cancel() it when the command
    stops before it needs one (an error in its other input)."""

    def __init__(self, get: Callable[[], Inventory], cancel: Callable[[], None] = lambda: None) -> None:
        self._get, self._cancel = get, cancel

    def __call__(self) -> Inventory:
        return self._get()

    def cancel(self) -> None:
        self._cancel()


def load_inventory_soon(name_or_path: str, limit: str | None = None,
                        vault: VaultOptions = VaultOptions()) -> PendingInventory:
    """Start loading the inventory; call the result to get it.

    Unchanged inventories come from opsctl's cache at once. Otherwise importing Ansible and
    parsing take about half a second of one CPU: in a forked process that overlaps with what
    the caller does meanwhile (importing paramiko, compiling the check catalog) on the other
    CPU. Errors are raised when the result is asked for, as load_inventory raises them.
    """
    source = resolve_inventory(name_or_path)
    key, cached = _cached(source, limit)
    if cached is not None:
        return PendingInventory(lambda: from_snapshot(source, cached))
    try:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
        future = pool.submit(_parse_and_store, source, limit, key, vault)
    except (OSError, ValueError):
        return PendingInventory(lambda: from_snapshot(source, _parse_and_store(source, limit, key, vault)))

    def result() -> Inventory:
        try:
            return from_snapshot(source, future.result())
        finally:
            pool.shutdown(wait=False)

    def cancel() -> None:
        # Wait for the pool's own thread: exiting while it runs races the interpreter's shutdown
        # of it, which now and then printed an "Exception ignored" traceback after the error.
        pool.shutdown(wait=True, cancel_futures=True)
    return PendingInventory(result, cancel)
