"""Which pools the opsctl_php_fpm role manages, in which file, under which master, sized how.

Every pool of every running master discovery found (several PHP versions side by side, a pool
per site), each in the file that defines it, each sized by the capacity model's split
(php_fpm.pools). Only a host where no master runs falls back to the OS family's layout and the
pools the inventory names. Stdlib only: the role runs under plain ansible-playbook and AWX.
"""

# F1-F7 and seed NNN: docs/failure-modes.md and docs/incidents.md of the opsctl repository.

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

# The pool keys the capacity model sizes per pool; the rest of its keys hold for the whole host.
SIZED = {"listen.backlog": "listen_backlog", "pm.max_children": "pm_max_children",
         "pm.start_servers": "pm_start_servers", "pm.min_spare_servers": "pm_min_spare_servers",
         "pm.max_spare_servers": "pm_max_spare_servers"}


def _options(wanted: Sequence[Mapping], name: str, conf: str) -> Mapping:
    """The inventory's entry for a pool: by name, and by master (its configuration) when given."""
    return next((w for w in wanted if w.get("name") == name and w.get("master", conf) == conf), {})


def _sizes(label: str, plan: Mapping, overrides: Mapping) -> dict[str, Any]:
    """A role variable set for the host wins; else the pool's share (php_fpm.pools); else the
    host's figure (php_fpm.<key>)."""
    share = (plan.get("php_fpm.pools") or {}).get("value", {}).get(label) or {}
    return {key: overrides[key] if overrides.get(key) not in (None, "")
            else share.get(field, (plan.get(f"php_fpm.{field}") or {}).get("value"))
            for key, field in SIZED.items()}


def _masters(masters: Sequence[Mapping], fallback: Mapping) -> list[Mapping]:
    """Running masters by configuration path (pids change on every restart; the order of ports
    assigned below must not); the OS family's layout when none runs."""
    if masters:
        return sorted(masters, key=lambda m: (str(m.get("conf")), str(m.get("binary"))))
    return [dict(fallback, pools=[], pid_file=fallback.get("pidfile", ""))]


def managed_pools(masters: Sequence[Mapping], wanted: Sequence[Mapping], plan: Mapping, fallback: Mapping,
                  overrides: Mapping, status_port: int) -> list[dict[str, Any]]:
    """One entry per managed pool: dest, name, label, master {conf, binary, pidfile, version,
    slowlog}, status_listen (the inventory's, else 127.0.0.1:<status_port + n>), settings (the
    inventory's per-pool keys) and sized (the pool's share of the model's workers and queue, from
    the capacity plan `opsctl_capacity`; `overrides`: the role's variables for those keys)."""
    out: list[dict[str, Any]] = []
    for master in _masters(masters, fallback):
        conf = str(master.get("conf") or fallback.get("conf", ""))
        pool_dir = next((posixpath.dirname(p["file"]) for p in master.get("pools", []) if p.get("file")),
                        fallback.get("pool_dir", ""))
        pools = list(master.get("pools", [])) or [{"name": w["name"]} for w in wanted] or [{"name": "www"}]
        names = {p["name"] for p in pools}
        # A pool the inventory names that this master does not define: its file is looked for
        # where the master's pools live, and the role refuses it when there is none.
        if masters:
            pools += [{"name": w["name"]} for w in wanted if w["name"] not in names and w.get("master", conf) == conf]
        about = {"conf": conf, "binary": master.get("binary") or fallback.get("binary", ""),
                 "pidfile": master.get("pid_file") or fallback.get("pidfile", ""),
                 "version": master.get("version") or fallback.get("version", ""),
                 "slowlog": master.get("slowlog") or fallback.get("slowlog", "")}
        for pool in pools:
            label = pool.get("label") or f"pool {pool['name']}"
            options = _options(wanted, pool["name"], conf)
            out.append({"dest": pool.get("file") or f"{pool_dir}/{pool['name']}.conf", "name": pool["name"],
                        "label": label, "master": about,
                        "status_listen": options.get("status_listen") or f"127.0.0.1:{status_port + len(out)}",
                        "settings": dict(options.get("settings") or {}),
                        "sized": _sizes(label, plan, overrides)})
    return out
