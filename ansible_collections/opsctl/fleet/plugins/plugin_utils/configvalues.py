"""Which values may go into the root-owned files opsctl's roles write: one rule per variable.

A newline in a sysctl value, a php-fpm pool setting or a status path used to add lines of the
user's choosing to /etc/sysctl.d, the pool file or nginx's configuration (`kernel.core_pattern`
runs a program as root); a path with `;` or `{` ended an nginx directive early; a pool name or a
unit name with `/` wrote outside its directory; a backup directory with a space or `;` went
unquoted into a shell command. Every string input of those roles is checked here, before any
host changes: by opsctl (`harden`, `--explain`) on the inventory's values, and by the roles
themselves (their validate tasks, also in check mode) on the values they will really write.

The roles' validate tasks call this module through plugins/filter/configvalues.py, and so does
the CLI, so `ansible-playbook` and AWX refuse exactly what opsctl refuses. Values are shown as
durations.clip shows them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any, Callable

from ansible_collections.opsctl.fleet.plugins.plugin_utils import durations
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip, millis


# More digits than any setting has: refused before int() or str() (either raises past 4300 digits).
MAX_DIGITS = 18

# Every character that ends or splits a line, or that a terminal or parser treats specially.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMES = {"\n": "a newline", "\r": "a carriage return", "\t": "a tab", "\x00": "a NUL byte"}
_PATH = re.compile(r"/[A-Za-z0-9._+@,~/-]*")
_PATH_CHARS = "letters, digits and . _ - + @ , ~ /"
_URI = re.compile(r"/[A-Za-z0-9._~/-]*")
_PORT = r"[0-9]{1,5}"
_ADDRESS = rf"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):{_PORT}|{_PORT}"
_NGINX_LISTEN = re.compile(rf"{_ADDRESS}|unix:{_PATH.pattern}")
_FPM_LISTEN = re.compile(rf"{_ADDRESS}|{_PATH.pattern}")
# sysctl.d names: segments of letters, digits, _ and -, separated by . or / (never `..`).
_SYSCTL_KEY = re.compile(r"[A-Za-z0-9_-]+([./][A-Za-z0-9_-]+)*")
# php-fpm keys: pm.max_children, or php_admin_value[error_log] / env[PATH].
_FPM_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*(\[[A-Za-z0-9_.-]+\])?")
_POOL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_LIMITS_DOMAIN = re.compile(r"\*|%|[%@]?[A-Za-z0-9_][A-Za-z0-9_.-]*\$?|@?[0-9]*:[0-9]*")
_UNIT = re.compile(r"[A-Za-z0-9:_@-][A-Za-z0-9:_.@-]*")
_INTEGER = re.compile(r"-?[0-9]+")
# Seconds to the millisecond, as a person or Ansible's -e writes them: 2, 0.8, 1.25.
_SECONDS = re.compile(r"[0-9]{1,9}(\.[0-9]{1,3})?")
MAX_TIMEOUT_S = 10 ** 9
_NGINX_SIZE = re.compile(r"[0-9]{1,9}[kKmM]?")
_WORD = re.compile(r"[a-z][a-z_-]*")

Rule = Callable[[Any, str], "str | None"]


def _describe(char: str) -> str:
    return _NAMES.get(char) or (f"control character U+{ord(char):04X}" if _CONTROL.match(char) else repr(char))


def whole_number(value: Any, where: str, low: int, high: int) -> str | None:
    """The rule for a whole number from low to high: an int, or ASCII digits as text (INI
    inventories and -e give text). "²".isdigit() is true and int() refuses it; 10**5000 cannot
    even be shown: both are refused, fast, with the value cut short."""
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.lstrip("-").isdigit() and len(text) <= MAX_DIGITS:
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return f"{where}: expected a whole number from {low} to {high}, got {clip(value)}"
    return None


def _scalar(value: Any, where: str) -> str | None:
    """A single value with no character that could end its line in the file."""
    if not isinstance(value, (str, int, float)):      # bool is an int: php-fpm writes yes/no
        return f"{where}: expected a single value, got {type(value).__name__}"
    if isinstance(value, int) and abs(value) >= 10 ** MAX_DIGITS:
        return f"{where}: {clip(value)} is larger than any setting takes"
    bad = _CONTROL.search(str(value))
    if bad:
        return f"{where}: contains {_describe(bad.group())}, which would add lines to a configuration file"
    return None


def timeout_seconds(value: Any, where: str) -> str | None:
    """The rule for a timeout in seconds, to the millisecond (2, 0.8, "1.25"): no finer than
    nginx and HAProxy count (durations.time_text writes it). 0 passes, as a whole number from 0
    does: the capacity model's invariants judge it."""
    problem = _scalar(value, where)
    if problem:
        return problem
    text = value.strip() if isinstance(value, str) else ""
    if _SECONDS.fullmatch(text):
        value = float(text)
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_TIMEOUT_S
            or abs(value * 1000 - millis(value)) > 1e-6):
        return f"{where}: expected seconds from 0 to {MAX_TIMEOUT_S}, to the millisecond (2, 0.8), got {clip(value)}"
    return None


def _text_rule(check: Callable[[str, str], str | None], allow_empty: bool = False) -> Rule:
    """A rule for one scalar written as text: the scalar checks first, then `check(text, where)`."""
    def rule(value: Any, where: str) -> str | None:
        problem = _scalar(value, where)
        if problem:
            return problem
        text = str(value)
        if allow_empty and text == "":
            return None
        return check(text, where)
    return rule


def _matching(pattern: re.Pattern[str], expected: str, allow_empty: bool = False) -> Rule:
    return _text_rule(lambda text, where: None if pattern.fullmatch(text) else f"{where}: {text[:80]!r} is not {expected}",
                      allow_empty)


def _path_problem(text: str, where: str) -> str | None:
    if not text.startswith("/"):
        return f"{where}: {text[:80]!r} is not an absolute path"
    bad = next((c for c in text if not re.fullmatch(r"[A-Za-z0-9._+@,~/-]", c)), None)
    if bad:
        return f"{where}: the path may hold only {_PATH_CHARS}, not {_describe(bad)}"
    if ".." in text.split("/"):
        return f"{where}: {text[:80]!r} climbs out of its directory (..)"
    return None


def _path_rule(allow_empty: bool = False) -> Rule:
    return _text_rule(_path_problem, allow_empty)


def _uri_rule(value: Any, where: str) -> str | None:
    problem = _matching(_URI, "a URI path such as /status (letters, digits and . _ - ~ /)")(value, where)
    if problem is None and ".." in str(value).split("/"):
        return f"{where}: {str(value)[:80]!r} climbs out of its directory (..)"
    return problem


def _integer(value: Any, where: str) -> str | None:
    if isinstance(value, bool):
        return f"{where}: expected a whole number, got a boolean"
    if isinstance(value, int):
        return _scalar(value, where)
    return _matching(_INTEGER, "a whole number")(value, where)


def _nginx_time_problem(text: str, where: str) -> str | None:
    try:
        durations.nginx_seconds(text)
    except ValueError as exc:
        return f"{where}: {exc}"
    return None


_nginx_time = _text_rule(_nginx_time_problem)


def _optional_integer(value: Any, where: str) -> str | None:
    """A whole number, or empty: the capacity model's figure (per pool, for the php-fpm role)."""
    return None if value in ("", None) else _integer(value, where)


def _workers(value: Any, where: str) -> str | None:
    """"auto" or a count; any other single word is left for `nginx -t` to judge (the role then
    restores the previous files), since one word cannot add a directive."""
    if isinstance(value, str):
        return _matching(re.compile(r"[A-Za-z0-9]+"), "auto or a number of workers")(value, where)
    return _integer(value, where)


def _list_of(rule: Rule) -> Rule:
    def check(value: Any, where: str) -> str | None:
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
            return f"{where}: expected a list, got {type(value).__name__}"
        return next((p for i, item in enumerate(value) if (p := rule(item, f"{where}[{i}]"))), None)
    return check


def _mapping_of(key_rule: Rule, value_rule: Rule) -> Rule:
    def check(value: Any, where: str) -> str | None:
        if not isinstance(value, Mapping):
            return f"{where}: expected a mapping, got {type(value).__name__}"
        for key, item in value.items():
            problem = key_rule(key, f"{where} key {clip(key)}") or value_rule(item, f"{where}[{clip(key)}]")
            if problem:
                return problem
        return None
    return check


_sysctl_key = _matching(_SYSCTL_KEY, "a sysctl key (segments of letters, digits, _ and - joined by . or /)")


def _sysctl_value(value: Any, where: str) -> str | None:
    problem = _scalar(value, where)
    if problem:
        return problem
    text = str(value)
    if not text.strip():
        return f"{where}: empty sysctl value"
    bad = next((c for c in text if c in '"\\'), None)   # the role's probe prints values inside JSON strings
    if bad:
        return f"{where}: a sysctl value may not hold {_describe(bad)}"
    return None


_fpm_key = _matching(_FPM_KEY, "a php-fpm key (pm.max_children, php_admin_value[name])")
_fpm_listen = _matching(_FPM_LISTEN, "a php-fpm listen address (127.0.0.1:9001, [::1]:9001, 9001 or /path)",
                        allow_empty=True)


def _pool(value: Any, where: str) -> str | None:
    if not isinstance(value, Mapping):
        return f"{where}: expected a mapping (name, master, status_listen, settings), got {type(value).__name__}"
    return (_matching(_POOL_NAME, "a pool name (letters, digits, _ . -; no /)")(value.get("name"), f"{where}.name")
            or _path_rule(allow_empty=True)(value.get("master", ""), f"{where}.master")
            or _fpm_listen(value.get("status_listen", ""), f"{where}.status_listen")
            or _mapping_of(_fpm_key, _scalar)(value.get("settings") or {}, f"{where}.settings"))


_path, _optional_path, _word = _path_rule(), _path_rule(allow_empty=True), _matching(_WORD, "a plain word")
_sysctl_map = _mapping_of(_sysctl_key, _sysctl_value)

# The string inputs of every role that writes configuration (opsctl_logrotate has its own rules).
VARIABLES: dict[str, Rule] = {
    "opsctl_capacity_overrides": _mapping_of(_scalar, _scalar),
    "opsctl_sysctl_file": _path,
    "opsctl_sysctl_settings": _sysctl_map,
    "opsctl_sysctl_extra": _sysctl_map,
    "opsctl_sysctl_at_least": _list_of(_sysctl_key),
    "opsctl_limits_nofile": _integer,
    "opsctl_limits_file": _path,
    "opsctl_limits_users": _list_of(_matching(_LIMITS_DOMAIN, "a limits.conf domain (user, @group, *, uid:uid)")),
    "opsctl_limits_units": _list_of(_matching(_UNIT, "a systemd unit name (no / or spaces)")),
    "opsctl_limits_nginx_default_file": _optional_path,
    "opsctl_php_fpm_pools": _list_of(_pool),
    "opsctl_php_fpm_version": _matching(re.compile(r"[0-9]+\.[0-9]+"), "a PHP version such as 8.2", allow_empty=True),
    "opsctl_php_fpm_pm": _word,
    "opsctl_php_fpm_slowlog": _optional_path,
    "opsctl_php_fpm_status_path": _uri_rule,
    "opsctl_php_fpm_ping_path": _uri_rule,
    **{f"opsctl_php_fpm_{name}": _optional_integer for name in (
        "listen_backlog", "pm_max_children", "pm_start_servers", "pm_min_spare_servers", "pm_max_spare_servers")},
    **{f"opsctl_php_fpm_{name}": _integer for name in (
        "status_port", "pm_max_requests", "request_terminate_timeout", "request_slowlog_timeout", "rlimit_files",
        "reload_wait_s")},
    "opsctl_nginx_worker_processes": _workers,
    **{f"opsctl_nginx_{name}": _integer for name in (
        "worker_connections", "worker_rlimit_nofile", "listen_backlog", "upstream_max_fails", "upstream_fail_timeout",
        "limit_conn", "keepalive_timeout")},
    **{f"opsctl_nginx_upstream_{name}_timeout": timeout_seconds for name in ("connect", "send", "read")},
    **{f"opsctl_nginx_{name}": _path for name in (
        "conf", "tuning_conf", "server_snippet", "status_conf", "overload_root", "log_format_conf")},
    "opsctl_nginx_access_log_buffer": _matching(_NGINX_SIZE, "an nginx size such as 32k"),
    "opsctl_nginx_access_log_flush": _nginx_time,
    "opsctl_nginx_sites": _list_of(_path),
    "opsctl_nginx_status_listen": _matching(
        _NGINX_LISTEN, "an nginx listen address (127.0.0.1:8080, [::1]:8080, 8080 or unix:/path)"),
    "opsctl_nginx_status_path": _uri_rule,
    "opsctl_nginx_overload_page": _uri_rule,
    "opsctl_lifecycle_process_control_timeout": _integer,
    "opsctl_lifecycle_nginx_shutdown_timeout": _integer,
    "opsctl_lifecycle_stop_margin": _integer,
    "opsctl_lifecycle_state": _word,
    "opsctl_lifecycle_service_manager": _word,
    "opsctl_lifecycle_cron_policy": _word,
    "opsctl_lifecycle_cron_paths": _list_of(_path),
    "opsctl_lifecycle_backup_dir": _path,
    "opsctl_php_fpm_backup_dir": _path,
    "opsctl_nginx_backup_dir": _path,
}


def _templated(value: Any) -> bool:
    """An inventory value Ansible still has to template: the role checks its result instead."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(_templated(k) or _templated(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_templated(v) for v in value)
    return False


def problem(name: str, value: Any) -> str | None:
    """Why `value` may not be given to variable `name`, in one line; None when it may."""
    return VARIABLES[name](value, name)


def inventory_problem(host_vars: Mapping[str, Any]) -> str | None:
    """The first inventory value opsctl's roles would refuse, before anything runs; values
    still to be templated are left to the roles, which check what templating gives."""
    for name in VARIABLES:
        if name in host_vars and not _templated(host_vars[name]):
            found = problem(name, host_vars[name])
            if found:
                return found
    return None


def _filter_problem(values: Mapping[str, Any], known_only: bool = False) -> str:
    """`{'var': var, ...} | opsctl.fleet.config_problem`: "" or the first problem. With known_only,
    names without a rule are skipped (a role's gate over a host's whole hostvars)."""
    for name in values if not known_only else [n for n in VARIABLES if n in values]:
        found = problem(name, values[name])
        if found:
            return found
    return ""


def unknown_key_problem(value: Mapping, allowed: Collection[str], where: str) -> str:
    """"WHERE: unknown key K (allowed: ...)" for the first key of `value` not in `allowed`, or "".

    Sorted by repr: YAML keys may be numbers, null or text side by side ({1: x, name: y}), which
    sort() refuses; the key is echoed cut (durations.clip). A set of allowed keys is listed
    sorted, a sequence in its own order."""
    unknown = sorted((k for k in value if k not in allowed), key=repr)
    if not unknown:
        return ""
    listed = sorted(allowed) if isinstance(allowed, (set, frozenset)) else list(allowed)
    return f"{where}: unknown key {clip(unknown[0])} (allowed: {', '.join(listed)})"
