"""The opsctl_logrotate role's inventory values, refused before anything is written.

Each value ends up in a root-owned file: a logrotate config (where a newline or a brace starts a
new block, with its own root `postrotate` script), a cron.d line, a systemd unit, the root
prune script, or a shell command. So every value is held to the narrow shape it needs, and a
value that could mean anything else is an error naming the variable.

The opsctl_logrotate role asserts with this module first (plugins/filter/logrotate.py), so
`ansible-playbook` refuses exactly what opsctl refuses. Jinja templates in values are left to
that assert, which sees them resolved. Values are echoed as durations.clip shows them (cut to 60
characters), never whole.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator, Mapping

from ansible_collections.opsctl.fleet.plugins.plugin_utils.configvalues import unknown_key_problem
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip

# Absolute paths of plain characters: no whitespace (logrotate splits on it), no quotes, braces,
# '#', '\\' or '$' (logrotate and shell syntax), no control characters, no non-ASCII.
_PATH = re.compile(r"/[A-Za-z0-9._+@%=:,~/-]*")
_GLOB = re.compile(r"/[A-Za-z0-9._+@%=:,~/*?\[\]!-]*")
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")  # what useradd / groupadd accept
_APP_KEYS = ("path", "owner", "group")
# variable -> (lowest, highest): whole numbers that reach configs and the prune script.
_NUMBERS = {
    "opsctl_logrotate_keep_days": (1, 36500),
    "opsctl_logrotate_prune_max_files": (1, 1_000_000),
    "opsctl_logrotate_prune_step_mb": (1, 1_048_576),
    "opsctl_logrotate_prune_step_pause_ms": (0, 60_000),
}


def templated(value: Any) -> bool:
    """A Jinja template: only Ansible can resolve it (the role's assert checks the result)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _path_problem(value: Any, where: str, *, glob: bool, empty_ok: bool = False) -> str:
    if empty_ok and value == "":
        return ""
    shape = _GLOB if glob else _PATH
    allowed = "letters, digits and / . _ - + @ % = : , ~" + (" * ? [ ] !" if glob else "")
    if not isinstance(value, str) or not shape.fullmatch(value):
        return f"{where}: expected an absolute path of {allowed} (no spaces, quotes, braces or control characters), got {clip(value)}"
    parts = value.split("/")
    if ".." in parts or "." in parts or value.endswith("/"):
        return f"{where}: expected a normalized path to a file (no '.' or '..' parts, no trailing /), got {clip(value)}"
    return ""


def _account_problem(value: Any, where: str) -> str:
    if isinstance(value, str) and _ACCOUNT.fullmatch(value):
        return ""
    return f"{where}: expected a user or group name (letters, digits, _ . -; at most 32), got {clip(value)}"


def whole(value: Any, low: int, high: int) -> int | None:
    """`value` as a whole number from low to high, else None. Digits as text count: INI
    inventories and -e key=value give text, and Ansible's own int conversion accepts them."""
    # Digits only, and few: int() of more than 4300 digits raises, and "²".isdigit() is true.
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 18:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value


def _number_problem(value: Any, where: str, low: int, high: int) -> str:
    if whole(value, low, high) is None:
        shown = repr(value)
        return f"{where}: expected a whole number from {low} to {high}, got {shown[:60] + '…' * (len(shown) > 60)}"
    return ""


def _app_log_problems(value: Any) -> Iterator[str]:
    where = "opsctl_logrotate_app_logs"
    if not isinstance(value, list):
        yield f"{where}: expected a list of {{path, owner, group}} mappings, got {clip(value)}"
        return
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if not isinstance(item, Mapping) or "path" not in item:
            yield f"{at}: expected a mapping with a path (and optional owner, group), got {clip(item)}"
            continue
        unknown = unknown_key_problem(item, _APP_KEYS, at)
        if unknown:
            yield unknown
        if "group" in item and "owner" not in item:
            yield f"{at}: group is used only with owner (logrotate's su owner group)"
        yield _path_problem(item["path"], f"{at}.path", glob=True)
        for key in ("owner", "group"):
            if key in item:
                yield _account_problem(item[key], f"{at}.{key}")


def _checks() -> dict[str, Callable[[Any, str], list[str]]]:
    """variable -> its check, which returns every problem found (empty: fine)."""
    checks: dict[str, Callable[[Any, str], list[str]]] = {
        "opsctl_logrotate_nginx_logs": lambda v, w: [_path_problem(v, w, glob=True)],
        "opsctl_logrotate_php_fpm_log": lambda v, w: [_path_problem(v, w, glob=True, empty_ok=True)],
        "opsctl_logrotate_backup_dir": lambda v, w: [_path_problem(v, w, glob=False)],
        "opsctl_logrotate_app_logs": lambda v, w: list(_app_log_problems(v)),
    }
    for name, (low, high) in _NUMBERS.items():
        checks[name] = lambda v, w, low=low, high=high: [_number_problem(v, w, low, high)]
    return checks


def problems(values: Mapping[str, Any], *, resolved: bool = False) -> list[str]:
    """Why each given opsctl_logrotate_* value cannot be used (empty: all fine). Values that are
    absent keep the role's defaults. Unless `resolved` (inside Ansible, where a "{{" left in a
    value is data, not a template), templates are skipped (see `templated`)."""
    found: list[str] = []
    for name, check in _checks().items():
        if name in values and (resolved or not templated(values[name])):
            found += check(values[name], name)
    return [p for p in found if p]


def role_problems(values: Mapping[str, Any]) -> list[str]:
    """The role's filter: its values arrive resolved by Ansible."""
    return problems(values, resolved=True)
