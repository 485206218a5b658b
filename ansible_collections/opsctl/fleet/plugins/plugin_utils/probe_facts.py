"""Turn the probe's raw JSON (roles/opsctl_preflight/files/probe.sh) into structured facts.

The opsctl_preflight role's filters (plugins/filter/preflight.py) call this module and so does
`opsctl check`, so a playbook run and `opsctl check` read a host the same way. Every section is
parsed on its own: a section that failed on the host becomes an entry in `facts["errors"]` and
leaves the rest intact.
"""

# F1-F7 and seed NNN: docs/failure-modes.md and docs/incidents.md of the opsctl repository.

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from typing import Any, Callable

from ansible_collections.opsctl.fleet.plugins.plugin_utils import service_actions
from ansible_collections.opsctl.fleet.plugins.plugin_utils.fpm_facts import (
    link_services, parse_fpm_status, parse_masters, parse_php_fpm)
from ansible_collections.opsctl.fleet.plugins.plugin_utils.hosttext import integer as _int, kv as _kv
from ansible_collections.opsctl.fleet.plugins.plugin_utils.hosttext import nginx_seconds, systemd_seconds
from ansible_collections.opsctl.fleet.plugins.plugin_utils.log_facts import (fpm_log_paths, logrotate_patterns,
                                                                             nginx_log_paths, rotation_of)

FASTCGI_DEFAULT_S = 60  # nginx's default for every fastcgi_*/proxy_* timeout
KEEPALIVE_DEFAULT_S = 75  # nginx's keepalive_timeout when none is set
# What `nginx -T` may cost the controller: blocks and directives once includes are expanded (a
# fan-out of files including each other multiplies them), and levels of nested blocks (each is a
# Python stack frame when walked). Real fleets stay far below both; beyond them a host's nginx
# facts are that host's section error, never minutes of CPU or a RecursionError.
MAX_NGINX_STATEMENTS = 200_000
MAX_NGINX_DEPTH = 64


# --- small sections ---------------------------------------------------------------------------

def parse_meta(text: str) -> dict[str, Any]:
    kv = _kv(text)
    return {"hostname": kv.get("hostname", ""), "epoch": _int(kv.get("epoch"), 0),
            "utc_offset": kv.get("utc_offset", "+0000"), "timezone": kv.get("timezone", ""),
            "kernel": kv.get("kernel", ""), "cpus": _int(kv.get("cpus"), 1),
            "systemd": kv.get("systemd") == "1", "uid": _int(kv.get("uid")),
            "nofile_max": _int(kv.get("nofile_max")),
            "python3": kv.get("python3") == "1"}


def parse_sysctl(text: str) -> dict[str, Any]:
    """`net/core/somaxconn:4096` lines (grep -H under /proc/sys) -> {"net.core.somaxconn": 4096}."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        value = " ".join(value.split())  # ip_local_port_range is tab separated
        out[key.replace("/", ".")] = _int(value, value)
    return out


def parse_meminfo(text: str) -> dict[str, int]:
    kb = {}
    for line in text.splitlines():
        name, _sep, rest = line.partition(":")
        kb[name] = _int(rest.split()[0] if rest.split() else "", 0) or 0
    swap_total = kb.get("SwapTotal", 0) // 1024
    return {"total_mb": kb.get("MemTotal", 0) // 1024, "available_mb": kb.get("MemAvailable", 0) // 1024,
            "swap_total_mb": swap_total, "swap_used_mb": swap_total - kb.get("SwapFree", 0) // 1024}


def parse_disk(text: str) -> dict[str, dict[str, Any]]:
    """df -Pk /var/log /: the first row is the log volume, the second the root file system."""
    rows = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 6 and cols[1].isdigit():
            rows.append({"mount": cols[5], "total_mb": int(cols[1]) // 1024, "free_mb": int(cols[3]) // 1024,
                         "used_pct": _int(cols[4].rstrip("%"), 0)})
    return dict(zip(("log", "root"), rows))


def parse_processes(text: str) -> list[dict[str, Any]]:
    procs = []
    for line in text.splitlines():
        cols = line.split(None, 3)
        if len(cols) < 3 or not cols[0].isdigit():
            continue
        args = cols[3] if len(cols) > 3 else ""
        name = "php-fpm" if cols[2].startswith("php-fpm") else cols[2]
        if name not in ("php-fpm", "nginx"):
            continue
        procs.append({"pid": int(cols[0]), "ppid": _int(cols[1], 0), "name": name,
                      "role": "master" if "master process" in args else "worker", "args": args})
    return procs


def parse_limits(text: str, procs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_pid = {p["pid"]: p for p in procs}
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 4 or not cols[0].isdigit():
            continue
        proc = by_pid.get(int(cols[0]), {})
        out.append({"pid": int(cols[0]), "name": "php-fpm" if cols[1].startswith("php-fpm") else cols[1],
                    "role": proc.get("role", "worker"),
                    "nofile_soft": _int(cols[2], 0), "nofile_hard": _int(cols[3], 0)})
    return out


def _users(col: str) -> tuple[str, list[int]]:
    names = re.findall(r'\("([^"]+)"', col)
    pids = sorted({int(p) for p in re.findall(r"pid=(\d+)", col)})
    name = names[0] if names else ""
    return ("php-fpm" if name.startswith("php-fpm") else name), pids


def parse_listeners(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        cols = line.split()
        if len(cols) < 6 or cols[1] != "LISTEN" or not cols[2].isdigit():
            continue
        kind = "unix" if cols[0].startswith("u_") else "tcp"
        local = cols[4]
        owner, pids = _users(" ".join(cols[6:]))
        entry = {"kind": kind, "local": local, "recv_q": int(cols[2]), "send_q": int(cols[3]),
                 "owner": owner, "pids": pids, "port": None, "close_wait": 0}
        if kind == "tcp":
            entry["port"] = _int(local.rsplit(":", 1)[-1])
        out.append(entry)
    return out


def count_close_wait(text: str, listeners: list[dict[str, Any]]) -> None:
    """CLOSE_WAIT sockets per TCP listener port (the F1 symptom: dead queued connections)."""
    ports: dict[int, int] = {}
    for line in text.splitlines():
        cols = line.split()
        # state close-wait output: Recv-Q Send-Q Local Peer (no state column)
        local = next((c for c in cols if ":" in c), "")
        port = _int(local.rsplit(":", 1)[-1]) if local else None
        if port is not None:
            ports[port] = ports.get(port, 0) + 1
    for entry in listeners:
        if entry["kind"] == "tcp":
            entry["close_wait"] = ports.get(entry["port"], 0)


def _sample(text: str) -> dict[str, float]:
    lines = text.splitlines()
    out: dict[str, float] = {}
    tcpext = [l.split()[1:] for l in lines if l.startswith("TcpExt:")]
    if len(tcpext) >= 2:
        for name, value in zip(tcpext[0], tcpext[1]):
            if name in ("ListenOverflows", "ListenDrops"):
                out[name] = float(value)
    for line in lines:
        cols = line.split()
        if cols and cols[0] == "cpu":
            values = [float(v) for v in cols[1:]]
            out["cpu_total"], out["cpu_iowait"] = sum(values[:8]), values[4] if len(values) > 4 else 0.0
        elif cols and cols[0] == "ctxt":
            out["ctxt"] = float(cols[1])
        elif re.fullmatch(r"\d+\.\d+", line.strip()):
            out["time"] = float(line)
    return out


def parse_samples(first: str, second: str) -> dict[str, Any]:
    a, b = _sample(first), _sample(second)
    interval = max(b.get("time", 1.0) - a.get("time", 0.0), 0.001)
    cpu = max(b.get("cpu_total", 0) - a.get("cpu_total", 0), 1.0)
    return {
        "interval_s": round(interval, 3),
        "listen_overflows": int(b.get("ListenOverflows", 0) - a.get("ListenOverflows", 0)),
        "listen_drops": int(b.get("ListenDrops", 0) - a.get("ListenDrops", 0)),
        "listen_overflows_total": int(b.get("ListenOverflows", 0)),
        "iowait_pct": round(100.0 * (b.get("cpu_iowait", 0) - a.get("cpu_iowait", 0)) / cpu, 1),
        "ctxt_per_s": int((b.get("ctxt", 0) - a.get("ctxt", 0)) / interval),
    }


# --- nginx -------------------------------------------------------------------------------------

def _tokens(text: str) -> list[str]:
    """nginx config tokens: words, quoted strings, and the punctuation ; { }."""
    out, i, n = [], 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif ch in ";{}":
            out.append(ch)
            i += 1
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            out.append(text[i + 1:j])
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in ";{}" and not (text[j] == "#" and j == i):
                j += 1
            out.append(text[i:j])
            i = j
    return out


class _Budget:
    """The blocks and directives one `nginx -T` may still produce, and how deep they may nest."""

    def __init__(self) -> None:
        self.left = MAX_NGINX_STATEMENTS

    def spend(self, count: int = 1) -> None:
        self.left -= count
        if self.left < 0:
            raise ValueError(f"nginx configuration too large to read: more than {MAX_NGINX_STATEMENTS} "
                             "blocks and directives (includes expanded)")


def _too_deep() -> ValueError:
    return ValueError(f"nginx configuration nested too deep to read: more than {MAX_NGINX_DEPTH} levels of blocks")


def _tree(tokens: list[str], budget: _Budget) -> list[tuple[str, list[str], Any]]:
    """(name, args, children-or-None) statements; a stray close brace ends the file, as before.

    Iterative: nesting costs a list entry, not a stack frame, and stops at MAX_NGINX_DEPTH."""
    top: list[tuple[str, list[str], Any]] = []
    stack, words = [top], []
    for tok in tokens:
        if tok == ";":
            if words:
                budget.spend()
                stack[-1].append((words[0], words[1:], None))
            words = []
        elif tok == "{":
            if len(stack) > MAX_NGINX_DEPTH:
                raise _too_deep()
            budget.spend()
            children: list[tuple[str, list[str], Any]] = []
            stack[-1].append((words[0] if words else "", words[1:], children))
            stack.append(children)
            words = []
        elif tok == "}":
            if len(stack) == 1:
                break
            stack.pop()
        else:
            words.append(tok)
    return top


def split_nginx_dump(text: str) -> dict[str, str]:
    files: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        match = re.fullmatch(r"# configuration file (.+):", line)
        if match:
            current = files.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines) for name, lines in files.items()}


class _Includes:
    """The files of one dump, each parsed once, and each include pattern matched once."""

    def __init__(self, files: dict[str, str], prefix: str) -> None:
        self.files, self.prefix, self.budget = files, prefix, _Budget()
        self._trees: dict[str, list[tuple[str, list[str], Any]]] = {}
        self._matches: dict[str, list[str]] = {}

    def tree(self, path: str) -> list[tuple[str, list[str], Any]]:
        if path not in self._trees:
            self._trees[path] = _tree(_tokens(self.files[path]), _Budget())   # its own cap: expansion counts again
        return self._trees[path]

    def matching(self, pattern: str) -> list[str]:
        if pattern not in self._matches:
            if not any(ch in pattern for ch in "*?["):
                self._matches[pattern] = [pattern] if pattern in self.files else []
            else:
                # Each new glob is compared with every file: charged, so thousands of distinct
                # globs over thousands of files stop at the cap too (16 comparisons ~ 1 statement).
                self.budget.spend(len(self.files) // 16)
                match = re.compile(fnmatch.translate(pattern)).match
                self._matches[pattern] = sorted(f for f in self.files if match(f))
        return self._matches[pattern]


def _expand(stmts, inc: _Includes, depth: int = 0, level: int = 0):
    """The statements with every include replaced by the files it names (up to 10 includes deep).

    Every statement produced is charged to one budget, so a fan-out of files including each other
    stops at MAX_NGINX_STATEMENTS; `level` is the block nesting of the expanded tree."""
    if level > MAX_NGINX_DEPTH:
        raise _too_deep()
    out = []
    for name, args, children in stmts:
        inc.budget.spend()   # an include too: one that matches nothing still costs a look-up
        if name == "include" and args and depth < 10:
            pattern = args[0] if args[0].startswith("/") else f"{inc.prefix}/{args[0]}"
            for path in inc.matching(pattern):
                out.extend(_expand(inc.tree(path), inc, depth + 1, level))
        else:
            out.append((name, args, _expand(children, inc, depth, level + 1) if children is not None else None))
    return out


_TIMEOUTS = ("connect_timeout", "send_timeout", "read_timeout")


def _inherit(scope: dict[str, Any], stmts) -> dict[str, Any]:
    out = dict(scope)
    for name, args, children in stmts:
        if children is None and args:
            for kind in ("fastcgi", "proxy"):
                for t in _TIMEOUTS:
                    if name == f"{kind}_{t}":
                        out[name] = nginx_seconds(args[0])
    return out


def _walk_locations(stmts, scope, server: str, out: list, parent: str = "") -> None:
    for name, args, children in stmts:
        if name != "location" or children is None:
            continue
        label = (parent + " > " if parent else "") + " ".join(args)
        inner = _inherit(scope, children)
        for kind in ("fastcgi", "proxy"):
            passes = [a for n, a, c in children if n == f"{kind}_pass" and c is None]
            if passes:
                out.append({"server": server, "location": label, "kind": kind, "pass": passes[0][0] if passes[0] else "",
                            **{t: inner.get(f"{kind}_{t}", FASTCGI_DEFAULT_S) for t in _TIMEOUTS}})
        _walk_locations(children, inner, server, out, label)


def _keepalive(stmts, inherited: float) -> float:
    """keepalive_timeout (its first argument) set in this block, else the one it inherits."""
    return next((nginx_seconds(a[0]) for n, a, c in stmts if n == "keepalive_timeout" and c is None and a), inherited)


def _loopback_only(stmts) -> bool:
    """A server whose every listen is on the loopback or a unix socket."""
    addresses = [a[0] for n, a, c in stmts if n == "listen" and a]
    return bool(addresses) and all(x.startswith(("127.", "[::1]", "localhost", "unix:")) for x in addresses)


def parse_nginx(text: str, rc: int, cpus: int) -> dict[str, Any]:
    files = split_nginx_dump(text)
    main_file = next(iter(files), "")
    if rc != 0 or not main_file:
        first = next((l for l in text.splitlines() if "emerg" in l or "absent" in l), text.strip()[:200])
        return {"present": "absent" not in text, "error": first if rc != 0 else "", "worker_processes": None,
                "worker_processes_effective": 0, "worker_connections": 0, "worker_rlimit_nofile": None,
                "listens": [], "locations": [], "upstreams": [], "keepalive": [], "layout": {}}
    prefix = main_file.rsplit("/", 1)[0]
    includes = _Includes(files, prefix)
    layout = _layout(includes, main_file)
    root = _expand(includes.tree(main_file), includes)
    # Relative log paths are below nginx's prefix: a source build's /usr/local/nginx (conf/'s parent).
    layout["logs"] = nginx_log_paths(root, posixpath.dirname(prefix))
    top = {name: args for name, args, children in root if children is None}
    events = next((c for n, a, c in root if n == "events" and c is not None), [])
    http = next((c for n, a, c in root if n == "http" and c is not None), [])
    wp_raw = (top.get("worker_processes") or ["1"])[0]
    wc = next((_int(a[0], 512) for n, a, c in events if n == "worker_connections" and a), 512)
    listens, locations, upstreams, keepalive = [], [], [], []
    http_scope = _inherit({}, http)
    http_keepalive = _keepalive(http, KEEPALIVE_DEFAULT_S)
    for name, args, children in http:
        if name == "upstream" and children is not None:
            servers = [_upstream_server(a) for n, a, c in children if n == "server" and a]
            upstreams.append({"name": args[0] if args else "", "servers": servers})
        if name != "server" or children is None:
            continue
        names = next((a for n, a, c in children if n == "server_name"), ["_"])
        label = " ".join(names) or "_"
        if not _loopback_only(children):   # a balancer never reaches a status server on 127.0.0.1
            keepalive.append({"server": label, "timeout": _keepalive(children, http_keepalive)})
        for n, a, c in children:
            if n == "listen" and a:
                backlog = next((_int(x.split("=", 1)[1]) for x in a[1:] if x.startswith("backlog=")), None)
                listens.append({"server": label, "address": a[0], "backlog": backlog,
                                "backlog_asked": backlog if backlog is not None else 511})
        _walk_locations(children, _inherit(http_scope, children), label, locations)
    return {"present": True, "error": "", "worker_processes": wp_raw if wp_raw == "auto" else _int(wp_raw, 1),
            "worker_processes_effective": cpus if wp_raw == "auto" else (_int(wp_raw, 1) or 1),
            "worker_connections": wc, "worker_rlimit_nofile": _int((top.get("worker_rlimit_nofile") or [None])[0]),
            "listens": listens, "locations": locations, "upstreams": upstreams, "keepalive": keepalive,
            "layout": layout}


_NGINX_OWN = "# managed by opsctl (role opsctl_nginx)"   # the first line of each file the nginx role writes


def _layout(inc: _Includes, main_file: str) -> dict[str, Any]:
    """Where this nginx keeps what harden edits, from the files the dump names: the main file,
    the files its http block includes that hold server blocks (the sites: sites-enabled/*, conf.d,
    vhost/), and the directory of its first http-level `*.conf` glob (where http-level settings
    go: conf.d/ on Debian and RHEL, vhost/ on many panels). The nginx role's own files (its
    status server) are not sites."""
    http = next((c for n, a, c in inc.tree(main_file) if n == "http" and c is not None), [])
    sites = [main_file] if any(n == "server" for n, a, c in http) else []
    globs = []
    for name, args, _block in http:
        if name != "include" or not args:
            continue
        pattern = args[0] if args[0].startswith("/") else f"{inc.prefix}/{args[0]}"
        if pattern.endswith("/*.conf"):
            globs.append(pattern)
        for path in inc.matching(pattern):
            own = inc.files[path].lstrip().startswith(_NGINX_OWN)
            if not own and any(n == "server" for n, a, c in inc.tree(path)):
                sites.append(path)
    return {"conf": main_file, "sites": sites, "http_dir": globs[0][:-len("/*.conf")] if globs else ""}


def _upstream_server(args: list[str]) -> dict[str, Any]:
    opts = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    return {"address": args[0], "max_fails": _int(opts.get("max_fails"), 1),
            "fail_timeout": nginx_seconds(opts.get("fail_timeout", "10s")), "down": "down" in args[1:],
            "backup": "backup" in args[1:]}


# --- service managers, cron, logrotate -----------------------------------------------------------

def _blocks(text: str, marker: str = "### ") -> list[tuple[list[str], list[str]]]:
    out: list[tuple[list[str], list[str]]] = []
    for line in text.splitlines():
        if line.startswith(marker):
            out.append((line[len(marker):].split(), []))
        elif out:
            out[-1][1].append(line)
    return out


def _retry_schedule(line: str, variables: dict[str, str]) -> str:
    match = re.search(r"--retry[= ](\S+)", line)
    if not match:
        return ""
    schedule = match.group(1)
    for name, value in variables.items():
        schedule = schedule.replace(f"${name}", value).replace(f"${{{name}}}", value)
    return schedule


def _code(line: str) -> str:
    """A grep -n line without its number and comment."""
    return line.split(":", 1)[-1].split("#", 1)[0]


def _kill_stop(lines: list[str], variables: dict[str, str]) -> str:
    """A script that signals the master itself (opsctl's managed one): the first stop signal it
    sends, with its graceful wait; TERM only in force-stop comes later in the file."""
    for line in lines:
        match = re.search(r"\bkill -(QUIT|TERM|INT|KILL)\b", _code(line))
        if match:
            grace = variables.get("GRACE", "")
            return f"{match.group(1)}/{grace}" if grace.isdigit() else match.group(1)
    return ""


def _reload_signal(lines: list[str], variables: dict[str, str]) -> str:
    for line in lines:
        code = _code(line)
        # opsctl's managed script reloads through signal-wait.sh: opsctl_signal_and_wait SIGNAL ...
        match = (re.search(r"--signal (\w+)", code) or re.search(r"\bkill -(USR2|HUP)\b", code)
                 or re.search(r"\bkill -\$\{?(\w+)\}?", code)
                 or re.search(r"\bopsctl_signal_and_wait \"?\$?\{?(\w+)\}?", code))
        signal = match and variables.get(match.group(1), match.group(1))
        if signal in ("USR2", "HUP"):
            return signal
    return ""


def init_scripts_by_path(text: str) -> dict[str, dict[str, Any]]:
    """Stop/reload behaviour of every init script the probe read (any name), by path."""
    out = {}
    for header, lines in _blocks(text):
        path = header[1] if len(header) > 1 else ""
        variables = {}
        for line in lines:
            body = line.split(":", 1)[-1].strip()
            match = re.match(r"([A-Z_]+)=\"?\$\{[A-Z_]+:-([^}]+)\}\"?$|([A-Z_]+)=\"?([^\"\s]+)\"?$", body)
            if match:
                variables[match.group(1) or match.group(3)] = match.group(2) or match.group(4)
        stops = [_retry_schedule(l, variables) for l in lines if "--stop" in l and "--retry" in l and "--exec" not in l]
        stop = next((s for s in stops if s), "")
        if not stop and any("killproc" in l for l in lines):
            stop = "TERM"  # killproc without a signal sends SIGTERM (seed 003's CentOS script)
        if not stop:
            stop = _kill_stop(lines, variables)
        reload = _reload_signal(lines, variables)
        first = stop.split("/")[0] if stop else ""
        out[path] = {"init_script": path, "stop_schedule": stop,
                     "stop_signal": first if first and not first.isdigit() else ("TERM" if first == "" and stop else first),
                     "reload_signal": reload}
    return out


def by_service(items: dict[str, dict[str, Any]], kinds: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Init scripts or units (by path or unit name) -> the first of each service: the kind
    discovery found for it (`kinds`: path or unit -> php-fpm|nginx), else what its name says."""
    out: dict[str, dict[str, Any]] = {}
    for key, info in items.items():
        name = key.rsplit("/", 1)[-1]
        out.setdefault((kinds or {}).get(key) or ("nginx" if name.startswith("nginx") else "php-fpm"), info)
    return out


def parse_init_scripts(text: str, kinds: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The php-fpm and nginx init script, by service."""
    return by_service(init_scripts_by_path(text), kinds)


def unit_files_by_name(text: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """KillSignal / KillMode / TimeoutStopSec / ExecReload / ExecStop of every service unit read,
    drop-ins applied, by unit name; and the logrotate.timer's schedule settings."""
    seen: set[str] = set()
    files = []
    for header, lines in _blocks(text):
        path = header[1] if len(header) > 1 else ""
        base = path.split("/system/", 1)[-1]
        if base in seen:
            continue  # the first directory wins: /etc over /run over /usr/lib (= /lib on merged /usr)
        seen.add(base)
        files.append((base, path, _kv("\n".join(l for l in lines if not l.startswith("[")))))
    # As systemd applies them: the unit file, then its drop-ins in the order of their file names,
    # whichever directory each is in (the probe reads /etc first, so order is not given).
    files.sort(key=lambda f: (".d/" in f[0], f[0].rsplit("/", 1)[-1] if ".d/" in f[0] else ""))
    out: dict[str, dict[str, Any]] = {}
    timer: dict[str, str] = {}
    for base, path, settings in files:
        if base.startswith("logrotate.timer"):
            timer.update({k: v for k, v in settings.items() if k in ("OnCalendar", "AccuracySec", "RandomizedDelaySec")})
            continue
        # systemd's defaults: SIGTERM to every process of the unit, SIGKILL after 90 s.
        unit = out.setdefault(base.split(".d/", 1)[0], {
            "unit": "", "kill_signal": "SIGTERM", "kill_mode": "control-group", "timeout_stop_s": 90.0,
            "exec_reload": "", "exec_stop": "", "dropins": []})
        if ".d/" in base:
            unit["dropins"].append(path)
        else:
            unit["unit"] = path
        for key, field in (("KillSignal", "kill_signal"), ("KillMode", "kill_mode"), ("ExecReload", "exec_reload"),
                           ("ExecStop", "exec_stop")):
            if key in settings:
                unit[field] = settings[key]
        if "TimeoutStopSec" in settings:
            unit["timeout_stop_s"] = systemd_seconds(settings["TimeoutStopSec"], 90.0)
    return out, timer


def _service_action(command: str) -> tuple[str, str]:
    """(service, action) of what a line does to php-fpm or nginx (service_actions, as the
    lifecycle role judges it), ("", "") when nothing."""
    found = service_actions.classify(command)
    return (found.service, found.action) if found else ("", "")


_CRON_LINE = re.compile(r"^\s*(@\w+|(?:\S+\s+){4}\S+)\s+(.*)$")


def parse_crontabs(text: str) -> dict[str, Any]:
    """The probe's cron section (crontab, cron.d, user crontabs, anacrontab, run-parts scripts) as
    entries and script lines, each with what it does to php-fpm or nginx. A schedule itself is
    read by check_engine.parse_cron, the one cron schedule parser."""
    entries, scripts = [], []
    for header, lines in _blocks(text):
        if header[0] == "script":
            path, period = header[1], header[2] if len(header) > 2 else ""
            for line in lines:
                body = line.split(":", 1)[-1]
                service, action = _service_action(body)
                scripts.append({"source": path, "period": period, "line": body.strip(),
                                "service": service, "action": action, "logrotate": "logrotate" in body})
            continue
        path, kind = header[1], header[2] if len(header) > 2 else "system"
        for line in lines:
            assignment = re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*=", line)
            if assignment or (kind == "anacron" and not line[:1].isdigit() and not line.startswith("@")):
                continue
            match = _CRON_LINE.match(line)
            if not match:
                continue
            schedule, rest = match.group(1), match.group(2)
            if kind == "anacron":
                cols = line.split(None, 3)
                entries.append({"source": path, "schedule": "", "anacron_period": cols[0], "user": "root",
                                "command": cols[3] if len(cols) > 3 else "", "service": "", "action": ""})
                continue
            user, command = ("root", rest) if kind.startswith("user:") else (rest.split(None, 1) + [""])[:2]
            if kind.startswith("user:"):
                user = kind[5:]
            service, action = _service_action(command)
            entries.append({"source": path, "schedule": " ".join(schedule.split()), "user": user,
                            "command": command.strip(), "service": service, "action": action})
    return {"entries": entries, "scripts": scripts}


def rotation_runs(cron: dict[str, Any], units: dict[str, Any], systemd: bool) -> list[dict[str, Any]]:
    """When logrotate actually runs on this host: cron.d, cron.daily via /etc/crontab, or the timer."""
    runs = []
    for entry in cron["entries"]:
        if "logrotate" in entry["command"] and entry["schedule"] and "run-parts" not in entry["command"]:
            runs.append({"how": entry["source"], "schedule": entry["schedule"], "span_minutes": 0})
    in_daily = any(s["logrotate"] and s["period"] == "daily" for s in cron["scripts"])
    timer = units.get("logrotate_timer")
    if systemd and timer:
        calendar = timer.get("OnCalendar", "daily")
        accuracy = systemd_seconds(timer.get("AccuracySec", "1min"), 60)
        spread = systemd_seconds(timer.get("RandomizedDelaySec", "0"), 0)
        runs.append({"how": "logrotate.timer", "schedule": _calendar_to_cron(calendar),
                     "span_minutes": int((accuracy + spread) // 60), "calendar": calendar})
    elif in_daily:
        daily = next((e for e in cron["entries"] if "cron.daily" in e["command"] and e["schedule"]), None)
        if daily:
            runs.append({"how": "/etc/cron.daily via " + daily["source"], "schedule": daily["schedule"], "span_minutes": 0})
    return runs


def _calendar_to_cron(calendar: str) -> str:
    """The common OnCalendar forms as a cron schedule; anything else fires 'daily' by approximation."""
    calendar = calendar.strip()
    simple = {"daily": "0 0 * * *", "hourly": "0 * * * *", "weekly": "0 0 * * 1", "monthly": "0 0 1 * *"}
    if calendar in simple:
        return simple[calendar]
    match = re.search(r"(\d{1,2}|\*):(\d{2})(?::\d{2})?$", calendar)
    if match:
        return f"{int(match.group(2))} {match.group(1) if match.group(1) == '*' else int(match.group(1))} * * *"
    return "0 0 * * *"


def parse_logrotate(text: str) -> list[dict[str, Any]]:
    """Postrotate actions that touch php-fpm or nginx: a restart there stalls the pool."""
    out = []
    for header, lines in _blocks(text):
        inside = False
        for line in lines:
            stripped = line.strip()
            if stripped in ("postrotate", "prerotate"):
                inside = True
            elif stripped == "endscript":
                inside = False
            elif inside:
                service, action = _service_action(stripped)
                if service and action in ("stop", *service_actions.HARD):
                    out.append({"source": header[1] if len(header) > 1 else "", "line": stripped,
                                "service": service, "action": action})
    return out


def parse_clock(text: str) -> dict[str, Any]:
    for line in text.splitlines():
        if line.startswith("timedatectl NTPSynchronized="):
            value = line.split("=", 1)[1].strip()
            if value in ("yes", "no"):
                return {"synced": value == "yes", "source": "timedatectl"}
        if line.startswith("chronyc Leap status"):
            return {"synced": "Normal" in line, "source": "chronyc", "detail": line[8:].strip()}
        if line.startswith("ntpq *"):
            return {"synced": True, "source": "ntpq"}
    if any(l.startswith("ntpq ") for l in text.splitlines()):
        return {"synced": False, "source": "ntpq"}
    return {"synced": None, "source": "none: no timedatectl (systemd), chronyc or ntpq on the host"}


def parse_access_log(text: str) -> dict[str, Any]:
    total = {"lines": 0, "s499": 0, "s5xx": 0, "s502": 0, "s504": 0}
    files = []
    for line in text.splitlines():
        kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
        if "file" in kv:
            files.append(kv["file"])
            for key in total:
                total[key] += _int(kv.get(key), 0) or 0
    lines = total["lines"]
    return {**total, "files": files, "share_499": round(total["s499"] / lines, 4) if lines else 0.0,
            "share_5xx": round(total["s5xx"] / lines, 4) if lines else 0.0}


# --- assembly ---------------------------------------------------------------------------------

def parse(raw: str | dict[str, Any]) -> dict[str, Any]:
    """The probe's JSON (text or already decoded) -> facts; failed sections listed in errors."""
    data = json.loads(raw) if isinstance(raw, str) else raw
    sections = data.get("sections") if isinstance(data, dict) else None
    if not isinstance(sections, dict):
        # Whatever a host printed, it is that host's error: the caller reports it for this host only.
        raise ValueError(f"expected a JSON object with a 'sections' mapping, got {_shape(data)}")
    facts: dict[str, Any] = {"errors": {}}

    def section(name: str) -> dict[str, Any]:
        found = sections.get(name)
        return found if isinstance(found, dict) else {}

    def out(name: str) -> str:
        text = section(name).get("out", "")
        if not isinstance(text, str):   # raised inside run(): this section's error, not the host's
            raise TypeError(f"section {name}: 'out' is a {type(text).__name__}, not text")
        return text

    def run(key: str, parser: Callable[[], Any], default: Any) -> None:
        try:
            facts[key] = parser()
        except Exception as exc:  # one bad section must not hide the others
            facts[key] = default
            facts["errors"][key] = f"{type(exc).__name__}: {exc}"

    run("host", lambda: parse_meta(out("meta")), {"cpus": 1, "timezone": "", "utc_offset": "+0000", "systemd": False})
    run("sysctl", lambda: parse_sysctl(out("sysctl")), {})
    run("memory", lambda: parse_meminfo(out("meminfo")), {})
    run("disk", lambda: parse_disk(out("disk")), {})
    run("processes", lambda: parse_processes(out("processes")), [])
    run("limits", lambda: parse_limits(out("limits"), facts["processes"]), [])
    run("listeners", lambda: parse_listeners(out("listeners")), [])
    run("_cw", lambda: count_close_wait(out("close_wait"), facts["listeners"]), None)
    facts.pop("_cw", None)
    run("sample", lambda: parse_samples(out("sample0"), out("sample1")), {})
    somaxconn = facts["sysctl"].get("net.core.somaxconn")
    run("masters", lambda: parse_masters(out("masters")), [])
    # present = a master runs: a php-fpm binary on a host that runs none (an lb sharing an image)
    # is installed, not a php-fpm host.
    run("php_fpm", lambda: parse_php_fpm(out("php_fpm_tt"), somaxconn),
        {"present": False, "installed": False, "pools": [], "global": {}, "masters": [], "unreadable": []})
    run("_st", lambda: facts["php_fpm"].__setitem__(
        "status_skipped", parse_fpm_status(out("php_fpm_status"), facts["php_fpm"])), None)
    facts.pop("_st", None)
    run("nginx", lambda: parse_nginx(out("nginx_T"), _int(section("nginx_T").get("rc"), 1), facts["host"].get("cpus", 1)),
        {"present": False, "locations": [], "listens": [], "upstreams": []})
    # The master whose configuration nginx_T dumped: the first running one, else an installed binary.
    nginx_masters = sorted((m for m in facts["masters"] if m["kind"] == "nginx"), key=lambda m: not m["running"])
    facts["nginx"]["master"] = nginx_masters[0] if nginx_masters else {}
    facts["nginx"]["running"] = any(m["running"] for m in nginx_masters)
    run("_ann", lambda: annotate_listeners(facts), None)
    facts.pop("_ann", None)
    kinds = {path: m["kind"] for m in facts["masters"] for path in m["scripts"] + [m["unit"]] if path}
    run("init_scripts", lambda: init_scripts_by_path(out("init_scripts")), {})
    run("init", lambda: by_service(facts["init_scripts"], kinds), {})
    run("_units", lambda: unit_files_by_name(out("systemd_units")), ({}, {}))
    facts["unit_files"], timer = facts.pop("_units")
    facts["units"] = {**by_service(facts["unit_files"], kinds), **({"logrotate_timer": timer} if timer else {})}
    run("_svc", lambda: link_services(facts["php_fpm"], facts["masters"], facts["init_scripts"], facts["unit_files"]), None)
    facts.pop("_svc", None)
    run("cron", lambda: parse_crontabs(out("cron")), {"entries": [], "scripts": []})
    run("rotation", lambda: rotation_runs(facts["cron"], facts["units"], facts["host"].get("systemd", False)), [])
    run("postrotate", lambda: parse_logrotate(out("logrotate")), [])
    run("logs", lambda: rotation_of(
        [(path, "nginx") for path in facts["nginx"].get("layout", {}).get("logs", []) if facts["nginx"].get("running")]
        + fpm_log_paths(facts["php_fpm"].get("masters", [])), logrotate_patterns(out("logrotate"))), [])
    run("logs_due", lambda: {k: _int(v, 0) for k, v in (p.split("=") for p in out("logs_due").split())}, {})
    run("clock", lambda: parse_clock(out("clock")), {"synced": None, "source": "unknown"})
    run("haproxy", lambda: parse_haproxy(out("haproxy")), {"present": False, "backends": [], "frontends": []})
    run("access_log", lambda: parse_access_log(out("access_log")), {"lines": 0, "share_499": 0.0, "share_5xx": 0.0})
    return facts


def parse_haproxy(text: str) -> dict[str, Any]:
    """probe.sh's haproxy section: the running HAProxy, `haproxy -c` of its files, their
    backends as they run (haproxy_cfg.py), `show info` and the servers of `show stat`."""
    from ansible_collections.opsctl.fleet.plugins.plugin_utils import haproxy_cfg

    out: dict[str, Any] = {"present": False, "binary": "", "config_files": [], "check_rc": None, "check": "",
                           "backends": [], "frontends": [], "info": {}, "servers_up": [], "servers_down": []}
    parts = re.split(r"^### ", text, flags=re.M)
    files, api = [], {}
    for part in parts[1:]:
        head, _newline, body = part.partition("\n")
        words = head.split()
        if words[:1] == ["process"] and len(words) > 2:
            out.update(present=True, binary=words[2], config_files=words[3:])
        elif words[:1] == ["check"]:
            out["check_rc"], out["check"] = _int(words[1] if len(words) > 1 else "", 1), body.strip()
        elif words[:1] == ["file"]:
            files.append(body)
        elif words[:2] == ["api", "show"]:
            api[" ".join(words[1:])] = body
    config = haproxy_cfg.parse("\n".join(files))
    out.update(backends=config["backends"], frontends=config["frontends"])
    out["info"] = dict(line.split(": ", 1) for line in api.get("show info", "").splitlines() if ": " in line)
    lines = api.get("show stat", "").splitlines()
    if lines and lines[0].startswith("# "):
        head = lines[0][2:].split(",")
        for row in (dict(zip(head, line.split(","))) for line in lines[1:] if line):
            if row.get("svname") not in ("FRONTEND", "BACKEND", None) and row.get("type") == "2":
                up = row.get("status", "").startswith(("UP", "DRAIN", "no check"))
                out["servers_up" if up else "servers_down"].append(f"{row['pxname']}/{row['svname']} {row.get('status')}")
    return out


def _shape(value: Any) -> str:
    """What a value is, for an error message, without echoing a host's arbitrary output."""
    if isinstance(value, dict):
        return f"an object with keys {sorted(map(str, value))[:5]}"
    return f"a JSON {type(value).__name__}"


def _port(address: str) -> int | None:
    tail = address.rsplit(":", 1)[-1] if ":" in address else address
    return _int(tail)


def annotate_listeners(facts: dict[str, Any]) -> None:
    """Give each nginx / php-fpm listener the backlog its configuration asks for.

    The kernel caps a backlog at somaxconn when the socket is bound (seed 004), and php-fpm's
    reload keeps the old socket: so config, somaxconn and the live Send-Q can all differ.
    """
    somaxconn = facts["sysctl"].get("net.core.somaxconn")
    pools = facts.get("php_fpm", {}).get("pools", [])
    listens = facts.get("nginx", {}).get("listens", [])
    for entry in facts["listeners"]:
        entry["configured_backlog"], entry["config"] = None, ""
        if entry["owner"] == "php-fpm":
            pool = next((p for p in pools if p["listen"] == entry["local"] or
                         (entry["kind"] == "tcp" and _port(p["listen"]) == entry["port"])), None)
            if pool:
                raw = pool["listen_backlog"]
                entry["configured_backlog"] = pool["listen_backlog_asked"]
                entry["config"] = f"pool {pool['name']} listen.backlog = {raw}" + (
                    f" (= somaxconn {somaxconn})" if raw is not None and raw < 0 else "")
        elif entry["owner"] == "nginx" and entry["kind"] == "tcp":
            match = [l for l in listens if _port(l["address"]) == entry["port"]]
            if match:
                asked = max(l["backlog_asked"] for l in match)
                entry["configured_backlog"] = asked
                entry["config"] = f"listen {match[0]['address']}" + (
                    f" backlog={asked}" if any(l["backlog"] is not None for l in match) else f" (default backlog {asked})")
        entry["somaxconn"] = somaxconn


def capacity_facts(facts: dict[str, Any], host: str) -> dict[str, Any]:
    """What the capacity model and the roles read of a host (opsctl_capacity_host), from the
    probe's facts: its size, and the php-fpm and nginx masters discovery found running."""
    fpm, nginx, meta = facts.get("php_fpm", {}), facts.get("nginx", {}), facts.get("host", {})
    haproxy = facts.get("haproxy", {})
    present = bool(fpm.get("present"))
    stopped = [m["binary"] for m in fpm.get("masters", []) if not m.get("running")]
    return {"cpus": int(meta.get("cpus") or 1),
            "memory_mb": int(facts.get("memory", {}).get("total_mb") or 0),
            "php_version": fpm.get("version", "") if present else "",
            "php_fpm_bin": fpm.get("binary", "") if present else "",
            "php_fpm_stopped": "" if present or not stopped else stopped[0],
            "php_fpm_masters": [_master_summary(m) for m in fpm.get("masters", []) if m.get("running")],
            "nginx": bool(nginx.get("running")),
            "nginx_master": {k: v for k, v in nginx.get("master", {}).items() if k != "kind"} if nginx.get("running") else {},
            "nginx_layout": nginx.get("layout", {}) if nginx.get("running") else {},
            "systemd": bool(meta.get("systemd")),
            "haproxy": {k: haproxy[k] for k in ("binary", "config_files")} if haproxy.get("present") else {},
            "nofile_max": meta.get("nofile_max") or None,
            "host": host}


def _master_summary(master: dict[str, Any]) -> dict[str, Any]:
    """A running php-fpm master as the roles need it: where it lives, what starts it (`service`,
    the name the lifecycle and logrotate roles give it), and `slowlog`, the pattern (%s: the
    pool) of the slow logs the php-fpm role sets beside its error log and logrotate rotates."""
    error_log = master["global"].get("error_log", "")
    return {"version": master["version"], "binary": master["binary"], "conf": master["conf"], "pid": master["pid"],
            "pid_file": master["global"].get("pid", ""), "error_log": error_log,
            "service": service_name(master),
            "slowlog": re.sub(r"\.log$", "", error_log) + ".%s.slow.log" if error_log.startswith("/") else "",
            "unit": master.get("unit", ""),
            "scripts": master.get("scripts", []), "error": master["error"],
            "pools": [{"name": p["name"], "label": p.get("label", f"pool {p['name']}"), "listen": p["listen"],
                       "user": p["user"], "file": p["file"]} for p in master["pools"]]}


def service_name(master: dict[str, Any]) -> str:
    """The service a php-fpm master is: its init script's name, else its unit's, else Debian's
    name for its binary (php-fpm8.2 -> php8.2-fpm), else php-fpm."""
    if master.get("scripts"):
        return posixpath.basename(master["scripts"][0])
    if master.get("unit"):
        return re.sub(r"\.service$", "", master["unit"])
    match = re.fullmatch(r"php-fpm(\d+\.\d+)", posixpath.basename(master.get("binary", "")))
    return f"php{match.group(1)}-fpm" if match else "php-fpm"
