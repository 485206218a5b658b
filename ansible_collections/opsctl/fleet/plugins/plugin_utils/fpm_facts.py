"""What runs on a host (the probe's `masters` section) and every php-fpm master's configuration.

Discovery reads processes, not package paths: each nginx and php-fpm master is found in /proc,
its binary from /proc/PID/exe, its configuration from its process title (php-fpm names its file
in parentheses, nginx its -c and -p), the systemd unit from its cgroup and the init scripts that
name its binary, configuration or prefix. Installed binaries of known layouts that no master runs
are listed as stopped. Several masters (PHP versions side by side) are all kept, each with its
own pools; nothing here assumes one. See docs/architecture.md, "Discovery".
"""

# F1-F7 and seed NNN: docs/failure-modes.md and docs/incidents.md of the opsctl repository.

from __future__ import annotations

import json
import re
from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.hosttext import fpm_seconds, integer

_FPM_NOTICE = re.compile(r"^\[[^]]*\] (NOTICE|WARNING|ERROR|ALERT): ")  # php-fpm -tt logs each line
_VERSION = re.compile(r"PHP (\d+\.\d+)")


def _dash(value: str) -> str:
    return "" if value == "-" else value


def parse_masters(text: str) -> list[dict[str, Any]]:
    """`KIND running|stopped PID EXE CONF PREFIX unit=U scripts=A,B pidfile=P` lines -> one dict each."""
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 6 or cols[0] not in ("php-fpm", "nginx"):
            continue
        extra = dict(c.split("=", 1) for c in cols[6:] if "=" in c)
        out.append({"kind": cols[0], "running": cols[1] == "running", "pid": integer(cols[2]),
                    "binary": cols[3], "conf": _dash(cols[4]), "prefix": _dash(cols[5]),
                    "unit": _dash(extra.get("unit", "-")), "pidfile": _dash(extra.get("pidfile", "-")),
                    "scripts": [s for s in extra.get("scripts", "-").split(",") if s and s != "-"]})
    return out


def version_key(version: str) -> tuple[int, ...]:
    """"8.2" > "7.4" > "": the one order of PHP versions (a string sort puts 10.0 before 7.4)."""
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def newest_version(binaries: list[str]) -> str:
    """The newest X.Y that names a php-fpm binary (/usr/sbin/php-fpm8.2), "" when none does:
    the roles' fallback when no master runs (filter opsctl.fleet.php_fpm_newest)."""
    versions = [m.group(1) for m in (re.search(r"php-fpm(\d+\.\d+)$", str(b)) for b in binaries) if m]
    return max(versions, key=version_key, default="")


def _dump_blocks(text: str) -> list[dict[str, Any]]:
    """The php_fpm_tt section, per master: `### master STATE PID EXE CONF`, `### defines FILE
    SECTION` for each section header of the configuration and its includes, -v, -tt, `### rc N`."""
    blocks: list[dict[str, Any]] = []
    for raw in text.splitlines():
        if raw.startswith("### master "):
            cols = raw.split() + ["-"] * 6
            blocks.append({"running": cols[2] == "running", "pid": integer(cols[3]), "binary": cols[4],
                           "conf": _dash(cols[5]), "rc": None, "lines": [], "files": {}})
        elif raw.startswith("### rc ") and blocks:
            blocks[-1]["rc"] = integer(raw[7:])
        elif raw.startswith("### defines ") and blocks:   # ### defines FILE SECTION
            cols = raw[12:].split(None, 1)
            if len(cols) == 2:   # the last file wins: php-fpm reads them in order, later keys override
                blocks[-1]["files"][cols[1].strip()] = cols[0]
        elif blocks:
            blocks[-1]["lines"].append(raw)
    return blocks


def _sections(lines: list[str]) -> tuple[str, dict[str, str], list[dict[str, str]], str]:
    """(version, [global], pools, first error line) of one master's -v and -tt output."""
    version, error, detail, section = "", "", "", None
    glob: dict[str, str] = {}
    pools: list[dict[str, str]] = []
    for raw in lines:
        level = _FPM_NOTICE.match(raw)
        line = _FPM_NOTICE.sub("", raw)
        if raw.startswith("PHP:") and not detail:  # the INI parser's own message (a syntax error)
            detail = " ".join(raw[4:].split())
            continue
        if level and level.group(1) in ("ERROR", "ALERT") and not error:
            error = line.strip()
            continue
        match = _VERSION.match(line)
        if match and not version:
            version = match.group(1)
            continue
        header = re.fullmatch(r"\[(.+)\]", line.strip())
        if header:
            section = glob if header.group(1) == "global" else {"name": header.group(1)}
            if section is not glob:
                pools.append(section)
            continue
        key, sep, value = line.strip().partition(" = ")
        if sep and section is not None:
            section[key] = value.strip()
    return version, glob, pools, f"{error} ({detail})" if error and detail else error or detail


def _master(block: dict[str, Any], somaxconn: int | None) -> dict[str, Any]:
    version, glob, pools, error = _sections(block["lines"])
    if not version:
        match = re.search(r"php-fpm(\d+\.\d+)", block["binary"])
        version = match.group(1) if match else ""
    if not error and (block["rc"] not in (0, None) or not glob):
        first = next((l.strip() for l in block["lines"] if l.strip() and not _VERSION.match(l)), "")
        error = first[:200] or f"php-fpm -tt exited with {block['rc']} and printed nothing"
    label = f"php-fpm {version or '?'} {block['conf'] or block['binary']}"
    master = {"running": block["running"], "pid": block["pid"], "binary": block["binary"],
              "conf": block["conf"], "version": version, "label": label, "error": error[:200],
              "global": {"process_control_timeout": fpm_seconds(glob.get("process_control_timeout", "0")),
                         "rlimit_files": integer(glob.get("rlimit_files"), 0),
                         "pid": glob.get("pid", ""), "error_log": glob.get("error_log", "")},
              "pools": [dict(_pool(p, somaxconn), master=label, version=version, file=block["files"].get(p["name"], ""))
                        for p in pools],
              "unit": "", "scripts": []}
    return master


def parse_php_fpm(text: str, somaxconn: int | None) -> dict[str, Any]:
    """Every php-fpm master's effective configuration (php-fpm -tt of the file it runs)."""
    masters = [_master(b, somaxconn) for b in _dump_blocks(text)]
    running = [m for m in masters if m["running"]]
    _label_pools(running or masters[:1])
    chosen = sorted(running or masters, key=lambda m: version_key(m["version"]), reverse=True)
    first = chosen[0] if chosen else None
    return {"present": bool(running), "installed": bool(masters),
            "version": first["version"] if first else "", "binary": first["binary"] if first else "",
            "masters": masters, "global": first["global"] if first else {},
            "pools": [p for m in (running or masters[:1]) for p in m["pools"]],
            "unreadable": [{"label": m["label"], "error": m["error"]} for m in running if m["error"]]}


def _label_pools(masters: list[dict[str, Any]]) -> None:
    """`pool www`; with several masters `pool www (php-fpm 8.2 CONF)`, so results stay apart."""
    for master in masters:
        for pool in master["pools"]:
            pool["label"] = f"pool {pool['name']}" + (f" ({master['label']})" if len(masters) > 1 else "")


def _pool(raw: dict[str, str], somaxconn: int | None) -> dict[str, Any]:
    backlog = integer(raw.get("listen.backlog"), -1)
    # -1 (the PHP 8.2 default on Linux) asks for somaxconn; the kernel caps any value there.
    asked = somaxconn if backlog is None or backlog < 0 else backlog
    effective = min(asked, somaxconn) if asked is not None and somaxconn else asked

    def defined(key: str) -> Any:
        return None if raw.get(key, "undefined") == "undefined" else raw.get(key)

    return {
        "name": raw["name"], "listen": raw.get("listen", ""), "user": raw.get("user", ""),
        "listen_owner": defined("listen.owner"),
        "listen_backlog": backlog, "listen_backlog_asked": asked, "listen_backlog_effective": effective,
        "pm": raw.get("pm", ""), "pm_max_children": integer(raw.get("pm.max_children"), 0),
        "pm_max_requests": integer(raw.get("pm.max_requests"), 0),
        "request_terminate_timeout": fpm_seconds(raw.get("request_terminate_timeout", "0")),
        "request_slowlog_timeout": fpm_seconds(raw.get("request_slowlog_timeout", "0")),
        "status_path": defined("pm.status_path"), "status_listen": defined("pm.status_listen"),
        "access_log": defined("access.log"), "slowlog": defined("slowlog"),
        "rlimit_files": integer(raw.get("rlimit_files"), 0),
        "status": None,
    }


def parse_fpm_status(text: str, fpm: dict[str, Any]) -> str:
    """Attach each pool's status page figures; returns why none could be read ("" if some were).

    The probe heads each answer with `### pool LISTEN NAME`: the listen address tells two
    versions' pools of one name apart."""
    if text.startswith("skip:"):
        return text[5:].strip()
    pools = {(p["status_listen"] or p["listen"], p["name"]): p for p in fpm.get("pools", [])}
    current = None
    for line in text.splitlines():
        line = line.strip()  # cgi-fcgi prints the FastCGI response as is, headers end in CR
        if line.startswith("### pool "):
            cols = line[9:].split(None, 1) + [""]
            current = pools.get((cols[0], cols[1].strip()))
        elif line.startswith("{") and current is not None:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            current["status"] = {k.replace(" ", "_"): v for k, v in data.items()}
    if not any(p["status"] for p in pools.values()):
        return "no pool has pm.status_path set" if not any(p["status_path"] for p in pools.values()) \
            else "the status page did not answer"
    return ""


def link_services(fpm: dict[str, Any], masters: list[dict[str, Any]], scripts: dict[str, dict[str, Any]],
                  units: dict[str, dict[str, Any]]) -> None:
    """Give each php-fpm master what starts it, as discovery found it (by pid, else binary):
    `init` (its first init script's stop and reload) and `systemd` (its unit), None when none."""
    found = [m for m in masters if m["kind"] == "php-fpm"]
    for master in fpm.get("masters", []):
        match = next((m for m in found if master["pid"] is not None and m["pid"] == master["pid"]), None) \
            or next((m for m in found if m["binary"] == master["binary"]), None) or {}
        master["unit"], master["scripts"] = match.get("unit", ""), match.get("scripts", [])
        master["init"] = next((scripts[s] for s in master["scripts"] if s in scripts), None)
        master["systemd"] = units.get(master["unit"]) if master["unit"] else None
