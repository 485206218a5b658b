"""HAProxy's configuration as opsctl reads it (check's facts) and edits it (the opsctl_haproxy
role): its sections, the timeouts and health checks each backend really runs with, its servers
and its admin socket; and the edit of named settings inside the user's own backend, server and
frontend lines, which is how harden tunes a backend without taking the file over (a later file
cannot reopen a backend: docs/architecture.md, "HAProxy").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from ansible_collections.opsctl.fleet.plugins.plugin_utils.capacity import haproxy_ejection_ms
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import UNIT_SECONDS
from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import time_text as seconds_time_text

SECTION_WORDS = {"global", "defaults", "frontend", "backend", "listen", "peers", "resolvers", "userlist",
                 "cache", "program", "http-errors", "ring", "mailers"}
# HAProxy's time syntax: a whole figure, no unit is milliseconds (configuration.txt, 2.5).
_TIME = re.compile(r"^(\d+)(us|ms|s|m|h|d)?$")
# HAProxy's own defaults for what a server line does not say (configuration.txt, 5.2).
SERVER_DEFAULTS = {"inter": 2000, "fall": 3, "rise": 2}
TIMEOUTS = ("connect", "server", "queue", "check", "client")
MANAGED = "# managed by opsctl: timeouts, retries, redispatch and server checks/maxconn below are sized by opsctl harden"


def time_ms(text: str) -> int | None:
    """An HAProxy time (`5000`, `5s`, `660ms`: no unit is milliseconds) in ms, else None."""
    match = _TIME.match(text.strip())
    return int(int(match[1]) * UNIT_SECONDS[match[2] or "ms"] * 1000) if match else None


def time_text(ms: int) -> str:
    """`ms` as HAProxy reads it, written by the one rule for timeouts (durations.time_text)."""
    return seconds_time_text(ms / 1000)


@dataclass(frozen=True)
class Section:
    kind: str
    name: str
    start: int   # the header line
    end: int     # the line after its last


def _words(line: str) -> list[str]:
    return line.split("#", 1)[0].split()


def sections(lines: list[str]) -> list[Section]:
    found: list[Section] = []
    for index, line in enumerate(lines):
        words = _words(line)
        if words and words[0] in SECTION_WORDS and not line[:1].isspace():
            if found:
                found[-1] = Section(found[-1].kind, found[-1].name, found[-1].start, index)
            found.append(Section(words[0], words[1] if len(words) > 1 else "", index, len(lines)))
    return found


def _settings(lines: list[str], section: Section) -> dict[str, Any]:
    out: dict[str, Any] = {"timeouts": {}, "backends": [], "servers": [], "default_server": {}}
    for line in lines[section.start + 1:section.end]:
        words = _words(line)
        if words[:1] == ["timeout"] and len(words) > 2:
            out["timeouts"][words[1]] = time_ms(words[2])
        elif words[:1] == ["retries"] and len(words) > 1:
            out["retries"] = int(words[1]) if words[1].isdigit() else None
        elif words[:2] == ["option", "redispatch"]:
            out["redispatch"] = True
        elif words[:3] == ["no", "option", "redispatch"]:
            out["redispatch"] = False
        elif words[:2] == ["option", "httpchk"]:
            out["httpchk"] = " ".join(words[2:]) or "OPTIONS /"
        elif words[:1] in (["default_backend"], ["use_backend"]) and len(words) > 1:
            out["backends"].append(words[1])
        elif words[:1] == ["default-server"]:
            out["default_server"] = _server_options(words[1:])
        elif words[:1] == ["server"] and len(words) > 2:
            address, _colon, port = words[2].rpartition(":")
            out["servers"].append({"name": words[1], "address": address or words[2], "port": port,
                                   **_server_options(words[3:])})
    return out


def _server_options(words: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"check": "check" in words}
    for key in ("inter", "fastinter", "downinter"):
        if key in words[:-1]:
            out[key] = time_ms(words[words.index(key) + 1])
    for key in ("fall", "rise", "maxconn"):
        if key in words[:-1] and words[words.index(key) + 1].isdigit():
            out[key] = int(words[words.index(key) + 1])
    return out


def parse(text: str) -> dict[str, Any]:
    """Backends (and listen sections) with the settings they run with: their own, else the
    defaults section before them, else HAProxy's; frontends; the stats sockets."""
    lines = text.splitlines()
    inherited: dict[str, Any] = {"timeouts": {}}
    backends, frontends, sockets = [], [], []
    for section in sections(lines):
        own = _settings(lines, section)
        if section.kind == "defaults":
            inherited = own
        elif section.kind == "global":
            sockets += _sockets(lines[section.start + 1:section.end])
        if section.kind in ("frontend", "listen"):
            frontends.append({"name": section.name, "backends": own["backends"] + (
                [section.name] if section.kind == "listen" else []),
                "timeout_client_ms": own["timeouts"].get("client", inherited["timeouts"].get("client"))})
        if section.kind in ("backend", "listen"):
            backends.append(_backend(section, own, inherited))
    return {"backends": backends, "frontends": frontends, "sockets": sockets}


def _backend(section: Section, own: dict[str, Any], inherited: dict[str, Any]) -> dict[str, Any]:
    timeouts = {k: own["timeouts"].get(k, inherited["timeouts"].get(k)) for k in TIMEOUTS}
    if timeouts["queue"] is None:
        timeouts["queue"] = timeouts["connect"]   # HAProxy's rule when `timeout queue` is not set
    defaults = {**SERVER_DEFAULTS, **inherited.get("default_server", {}), **own["default_server"]}
    servers = []
    for server in own["servers"]:
        merged = {**defaults, **{k: v for k, v in server.items() if v is not None and (k != "check" or v)}}
        inter = merged["inter"]
        merged["ejection_ms"] = haproxy_ejection_ms(inter, merged.get("fastinter") or inter,
                                                    timeouts["check"] or inter, merged["fall"])
        servers.append(merged)
    picked = {key: own[key] if key in own else inherited.get(key) for key in ("retries", "redispatch", "httpchk")}
    return {"name": section.name, "kind": section.kind, "timeouts_ms": timeouts,
            "retries": picked["retries"] if picked["retries"] is not None else 3,
            "redispatch": bool(picked["redispatch"]), "httpchk": picked["httpchk"] or "", "servers": servers}


def _sockets(lines: list[str]) -> list[dict[str, Any]]:
    out = []
    for line in lines:
        words = _words(line)
        if words[:2] == ["stats", "socket"] and len(words) > 2:
            out.append({"path": words[2], "admin": "level" not in words or "admin" in words})
    return out


def _indent(lines: list[str], section: Section) -> str:
    for line in lines[section.start + 1:section.end]:
        if line.strip():
            return line[:len(line) - len(line.lstrip())]
    return "\t"


def _set_lines(lines: list[str], section: Section, wanted: list[tuple[list[str], str]]) -> list[str]:
    """In SECTION, each (key words, line): the first line starting with the key words becomes
    the line, later ones go; a missing one is added under the section's header and opsctl's mark."""
    body = lines[section.start + 1:section.end]
    indent = _indent(lines, section)
    added = []
    for key, new in wanted:
        hits = [k for k, line in enumerate(body) if _words(line)[:len(key)] == key]
        if hits:
            body[hits[0]] = indent + new
            for k in reversed(hits[1:]):
                del body[k]
        else:
            added.append(indent + new)
    mark = indent + MANAGED
    if added and mark not in body:
        added.insert(0, mark)
    return lines[:section.start + 1] + added + body + lines[section.end:]


def _server_line(line: str, options: Mapping[str, Any]) -> str:
    code, hash_, comment = line.partition("#")
    words = code.split()
    indent = line[:len(line) - len(line.lstrip())]
    for key, value in options.items():
        if value is None:
            continue
        if key == "check":
            if "check" not in words:
                words.append("check")
        elif key in words[3:-1]:
            words[words.index(key, 3) + 1] = str(value)
        else:
            words += [key, str(value)]
    return indent + " ".join(words) + (f" {hash_}{comment}" if hash_ else "")


def set_backend(text: str, backend: str, settings: Mapping[str, Any], maxconn: Mapping[str, int]) -> str:
    """TEXT with BACKEND's named settings (settings: timeouts_ms {connect, server, queue, check},
    retries, inter_ms, fall, rise, client_ms) and each server's check options; MAXCONN maps a
    server's name or address:port to its maxconn. Frontends sending to BACKEND get its client
    timeout. Unknown backend: TEXT unchanged (the role reports it)."""
    lines = text.splitlines()
    ends_newline = text.endswith("\n")
    timeouts = settings["timeouts_ms"]
    for section in reversed(sections(lines)):
        if section.kind in ("backend", "listen") and section.name == backend:
            wanted = [(["timeout", key], f"timeout {key} {time_text(timeouts[key])}") for key in ("connect", "server", "queue", "check")]
            wanted += [(["retries"], f"retries {settings['retries']}"), (["option", "redispatch"], "option redispatch")]
            if section.kind == "listen":
                wanted.append((["timeout", "client"], f"timeout client {time_text(settings['client_ms'])}"))
            lines = _set_lines(lines, section, wanted)
            section = next(s for s in sections(lines) if s.start == section.start)
            for k in range(section.start + 1, section.end):
                words = _words(lines[k])
                if words[:1] == ["server"] and len(words) > 2:
                    interval = time_text(settings["inter_ms"])
                    lines[k] = _server_line(lines[k], {
                        "check": True, "inter": interval, "fastinter": interval, "fall": settings["fall"],
                        "rise": settings["rise"], "maxconn": maxconn.get(words[1], maxconn.get(words[2]))})
        elif section.kind == "frontend" and backend in _settings(lines, section)["backends"]:
            lines = _set_lines(lines, section, [(["timeout", "client"], f"timeout client {time_text(settings['client_ms'])}")])
    return "\n".join(lines) + ("\n" if ends_newline else "")


def _filter_backends(hostvars: Mapping[str, Any], hosts: list[str], balancer: str) -> dict[str, dict[str, int]]:
    """`hostvars | opsctl.fleet.haproxy_backends(groups['all'], inventory_hostname)`: the backends
    of this HAProxy balancer that web hosts name in their opsctl_balancers, each server (its name,
    else address:80) with its maxconn: the php-fpm workers its event profile needs (capacity.py's
    workers_needed), so requests queue in HAProxy (timeout queue) rather than in php-fpm."""
    from ansible_collections.opsctl.fleet.plugins.plugin_utils import capacity, event_profile

    out: dict[str, dict[str, int]] = {}
    for host in hosts:
        found = hostvars[host]
        for entry in found.get("opsctl_balancers") or []:
            if not isinstance(entry, Mapping) or entry.get("host") != balancer or entry.get("type") != "haproxy":
                continue
            address = found.get("opsctl_service_address") or found.get("ansible_host") or host
            try:
                profile = event_profile.parse_profile(found.get("opsctl_event"))
                maxconn = capacity.workers_needed(profile.peak_qps, profile.p99_ms / 1000)
            except event_profile.ProfileError:
                continue
            out.setdefault(str(entry["upstream"]), {})[str(entry.get("server") or f"{address}:80")] = maxconn
    return out


def _filter_set(text: str, backends: Mapping[str, Mapping[str, int]], settings: Mapping[str, Any]) -> str:
    """`config | opsctl.fleet.haproxy_cfg_set(backends, settings)`: set_backend for each backend."""
    for name, maxconn in sorted(backends.items()):
        text = set_backend(text, name, settings, maxconn)
    return text


def _filter_missing(text: str, backends: Mapping[str, Any]) -> list[str]:
    """The backends web hosts name that the configuration does not define."""
    defined = {b["name"] for b in parse(text)["backends"]}
    return sorted(set(backends) - defined)
