"""Which logs nginx and php-fpm write, and which logrotate rule rotates each (F4).

The paths come from the configuration that runs (nginx -T, every php-fpm master's -tt), not from
a package layout: a source build writes /usr/local/nginx/logs/access.log, a panel
/www/wwwlogs/shop.log. A log no logrotate rule names grows until the disk is full.
"""

# F1-F7 and seed NNN: docs/failure-modes.md and docs/incidents.md of the opsctl repository.

from __future__ import annotations

import fnmatch
import posixpath
import shlex
from typing import Any, Iterable

# What a log directive may name that is no file: nginx's `off`, `stderr`, `syslog:...` and
# `memory:32m`, a device, php-fpm's `syslog`. A path with a variable is a file per request.
_NOT_FILES = ("off", "stderr", "stdout", "syslog", "memory:", "/dev/")


def is_log_file(path: str) -> bool:
    """Whether a log directive's value names a file. Written once: the probe's log facts here
    and the hosts' log readers (log_profile) share it."""
    return bool(path) and not path.startswith(_NOT_FILES) and "$" not in path


def below_prefix(path: str, prefix: str) -> str:
    """A log path as nginx opens it: a relative one below nginx's prefix (a source build's
    `logs/access.log` is /usr/local/nginx/logs/access.log)."""
    return path if path.startswith("/") else posixpath.join(prefix, path)


def nginx_log_paths(statements: Iterable, prefix: str) -> list[str]:
    """access_log and error_log files of an expanded nginx tree; relative ones below `prefix`
    (nginx's own prefix: a source build's /usr/local/nginx)."""
    found: list[str] = []

    def walk(stmts) -> None:
        for name, args, children in stmts:
            if name in ("access_log", "error_log") and args and is_log_file(args[0]):
                path = below_prefix(args[0], prefix)
                if path not in found:
                    found.append(path)
            if children is not None:
                walk(children)

    walk(statements)
    return found


def fpm_logs(master: dict[str, Any]) -> dict[str, list[str]]:
    """A php-fpm master's log files (fpm_facts' master) by what they hold: `error` (its
    [global] error_log), `access` and `slow` (its pools' access.log and slowlog)."""
    paths = {"error": [master["global"].get("error_log", "")],
             "access": [p.get("access_log") or "" for p in master["pools"]],
             "slow": [p.get("slowlog") or "" for p in master["pools"]]}
    return {key: list(dict.fromkeys(p for p in found if p.startswith("/") and is_log_file(p)))
            for key, found in paths.items()}


def fpm_log_paths(masters: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(path, writer) of every running php-fpm master's error log and its pools' access and slow logs."""
    out: list[tuple[str, str]] = []
    for master in masters:
        if master.get("running"):
            logs = fpm_logs(master)
            out += [(path, master["label"]) for key in ("error", "access", "slow") for path in logs[key]]
    return out


_SCRIPTS = ("postrotate", "prerotate", "firstaction", "lastaction", "preremove")


def logrotate_patterns(text: str) -> list[dict[str, Any]]:
    """The probe's logrotate section (`### file PATH`, then the file): each rule's file patterns.
    Scripts (postrotate ... endscript) are skipped whole: their shell braces are no rule's end."""
    rules: list[dict[str, Any]] = []
    source, words, inside, script = "", [], False, False
    for line in text.splitlines():
        if line.startswith("### file "):
            source, words, inside, script = line[9:].strip(), [], False, False
            continue
        stripped = line.strip()
        if script:
            script = stripped != "endscript"
        elif inside:
            script = stripped in _SCRIPTS
            inside = stripped != "}"
        elif "{" in stripped:
            words += _words(stripped.split("{", 1)[0])
            if words:
                rules.append({"source": source, "patterns": words})
            words, inside = [], True
        elif stripped.startswith(("/", '"')):
            words += _words(stripped)
    return rules


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def rotation_of(logs: list[tuple[str, str]], rules: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Each log with the first rule whose pattern matches it ("" when none does)."""
    out = []
    for path, writer in logs:
        rule = next((r["source"] for r in rules if any(fnmatch.fnmatchcase(path, p) for p in r["patterns"])), "")
        out.append({"path": path, "writer": writer, "rotated_by": rule})
    return out
