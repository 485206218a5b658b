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

_NOT_FILES = ("off", "stderr", "stdout", "syslog", "/dev/")


def _a_file(path: str) -> bool:
    return bool(path) and not path.startswith(_NOT_FILES) and not path.startswith("syslog:") and "$" not in path


def nginx_log_paths(statements: Iterable, prefix: str) -> list[str]:
    """access_log and error_log files of an expanded nginx tree; relative ones below `prefix`
    (nginx's own prefix: a source build's /usr/local/nginx)."""
    found: list[str] = []

    def walk(stmts) -> None:
        for name, args, children in stmts:
            if name in ("access_log", "error_log") and args and _a_file(args[0]):
                path = args[0] if args[0].startswith("/") else posixpath.join(prefix, args[0])
                if path not in found:
                    found.append(path)
            if children is not None:
                walk(children)

    walk(statements)
    return found


def fpm_log_paths(masters: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(path, writer) of every running php-fpm master's error log and its pools' access and slow logs."""
    out: list[tuple[str, str]] = []
    for master in masters:
        if not master.get("running"):
            continue
        paths = [master["global"].get("error_log", "")]
        paths += [p.get(key) or "" for p in master["pools"] for key in ("access_log", "slowlog")]
        out += [(path, master["label"]) for path in paths if path.startswith("/") and _a_file(path)]
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
