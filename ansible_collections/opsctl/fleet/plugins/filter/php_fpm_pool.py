"""Edit keys of a php-fpm pool file in place (filters opsctl_php_fpm_pool_set / _pool_values).

Why in place rather than a full template: the vendor's pool file stays the vendor's (its comments,
its user/group/listen owner, whatever the packager or the team added), so a package upgrade shows
a dpkg conffile diff of a few lines, and opsctl owns only the keys it sets. Stdlib only: the role
runs under plain ansible-playbook and AWX.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ansible_collections.opsctl.fleet.plugins.plugin_utils.lazy import lazy

MARKER = "; managed by opsctl (role opsctl_php_fpm): the keys it sets are edited in place; the rest is the vendor's file"
_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")


def _section_span(lines: list[str], pool: str) -> tuple[int, int]:
    """(first line after the [pool] header, end of the section); the pool must exist."""
    start = None
    for i, line in enumerate(lines):
        match = _SECTION.match(line)
        if not match:
            continue
        if start is not None:
            return start, i
        if match.group("name").strip() == pool:
            start = i + 1
    if start is None:
        raise ValueError(f"no [{pool}] section in the pool file")
    return start, len(lines)


def _key_pattern(key: str, commented: bool) -> re.Pattern[str]:
    # "pm" must not match "pm.max_children": the key is followed by spaces and "=".
    prefix = r"^\s*;\s*" if commented else r"^\s*"
    return re.compile(prefix + re.escape(key) + r"\s*=")


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _set_key(lines: list[str], pool: str, key: str, value: object) -> None:
    start, end = _section_span(lines, pool)
    new = f"{key} = {_render(value)}"
    active = [i for i in range(start, end) if _key_pattern(key, False).match(lines[i])]
    if active:
        for i in active:  # a later duplicate would win in php-fpm: keep every one in step
            lines[i] = new
        return
    commented = [i for i in range(start, end) if _key_pattern(key, True).match(lines[i])]
    if commented:
        # Next to the vendor's documentation of the key, where a person looks for it.
        lines[commented[0]] = new
        return
    insert_at = end
    while insert_at > start and not lines[insert_at - 1].strip():
        insert_at -= 1
    lines.insert(insert_at, new)


def pool_set(content: str, pool: str, settings: Mapping[str, object]) -> str:
    """The pool file with every key of settings set in section [pool]; idempotent."""
    lines = content.splitlines()
    for key, value in settings.items():
        _set_key(lines, pool, key, value)
    if not lines or lines[0] != MARKER:
        lines.insert(0, MARKER)
    return "\n".join(lines) + "\n"


def pool_values(content: str, pool: str) -> dict[str, str]:
    """The active key = value pairs of section [pool] (a later duplicate wins, as in php-fpm)."""
    lines = content.splitlines()
    start, end = _section_span(lines, pool)
    values: dict[str, str] = {}
    for line in lines[start:end]:
        stripped = line.strip()
        if not stripped or stripped.startswith(";") or "=" not in stripped:
            continue
        key, _sep, value = stripped.partition("=")
        values[key.strip()] = value.strip()
    return values


def _listener_matches(local: str, listen: str) -> bool:
    if listen.startswith("/"):
        return local == listen
    if listen.isdigit():  # "9000" listens on every address
        return local.rsplit(":", 1)[-1] == listen and local.rsplit(":", 1)[0] in ("*", "0.0.0.0", "[::]")
    return local == listen


def listener_backlog(ss_output: str, listen: str) -> int | None:
    """Send-Q (the accept queue limit the kernel really applies) of the listener bound to a
    php-fpm `listen` value, from `ss -Hlnxt` output; None when nothing listens there."""
    for line in ss_output.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[1] == "LISTEN" and _listener_matches(fields[4], listen):
            return int(fields[3])
    return None


def effective_backlog(configured: object, somaxconn: object) -> int:
    """What listen(fd, configured) really gets: the kernel caps it at somaxconn, -1 means somaxconn."""
    wanted, cap = int(str(configured)), int(str(somaxconn))
    return cap if wanted < 0 else min(wanted, cap)


class FilterModule:
    def filters(self) -> dict:
        return {
            "php_fpm_pool_set": pool_set,
            "php_fpm_pool_values": pool_values,
            "php_fpm_listener_backlog": listener_backlog,
            "php_fpm_effective_backlog": effective_backlog,
            "php_fpm_newest": lazy("fpm_facts", "newest_version"),
            "php_fpm_managed": lazy("fpm_pools", "managed_pools"),
        }
