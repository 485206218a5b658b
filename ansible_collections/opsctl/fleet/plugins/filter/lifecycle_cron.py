"""Cron lines that stop or restart php-fpm or nginx the hard way, and their graceful rewrite.

Stdlib only: the opsctl_lifecycle role uses this file as an Ansible filter plugin, and the unit
tests import it directly.

A nightly `/etc/init.d/php-fpm restart` (seed 003) cut paid orders half way. What counts as hard:
- a restart through a service manager (init script, service, invoke-rc.d, systemctl): a stop
  plus a start, so the node refuses traffic while it is down, and on stock scripts a SIGTERM;
- a signal that is not graceful sent by kill / killall / pkill (none, TERM, KILL, INT, 9, 15, 2);
- a stop followed by a start of the same service on the same line (a restart spelled out).
A lone `stop` is left alone: once the role has run it is a graceful QUIT, and taking the node
down was the author's intent; it is reported as kept.

Policies: `reload` rewrites only the hard command (schedule, user, sudo, redirections stay)
into the graceful reload of that service, keeping the original line in a marker comment above
it; `comment` disables the line behind the same marker; `report` changes nothing. `revert`
restores every marked line. Lines are matched with regular expressions, not a shell parser:
a quoted or aliased command can escape them, which is why the role also reports what it kept.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

MARK_REPLACED = "# opsctl_lifecycle replaced: "
MARK_DISABLED = "# opsctl_lifecycle disabled: "
POLICIES = ("reload", "comment", "report")

_SVC = r"(?P<svc>php(?:\d+(?:\.\d+)?)?-fpm(?:\d+(?:\.\d+)?)?|nginx)"
_UNIT = _SVC + r"(?:\.service)?"
_GRACEFUL_SIGNALS = {"QUIT", "SIGQUIT", "3", "USR1", "SIGUSR1", "10", "USR2", "SIGUSR2", "12",
                     "HUP", "SIGHUP", "1", "WINCH", "SIGWINCH", "0"}
_SIGNAL_OPT = r"(?P<opts>(?:\s+-{1,2}\S+(?:\s+(?!-)(?:[A-Z0-9]+)(?=\s))?)*)"

_HARD = [
    # /etc/init.d/php8.2-fpm restart, /etc/rc.d/init.d/php-fpm stop
    re.compile(r"(?P<cmd>/etc/(?:rc\.d/)?init\.d/" + _SVC +
               r"\s+(?P<verb>restart|stop|force-stop|try-restart|condrestart))\b"),
    # service php-fpm restart, invoke-rc.d nginx stop
    re.compile(r"(?P<cmd>\b(?:service|invoke-rc\.d)\s+" + _SVC +
               r"\s+(?P<verb>restart|stop|force-stop|try-restart|condrestart))\b"),
    # systemctl restart php8.2-fpm.service, systemctl kill nginx
    re.compile(r"(?P<cmd>\bsystemctl(?:\s+--?\S+)*\s+(?P<verb>restart|stop|try-restart|kill)\s+" + _UNIT + r")(?![\w.-])"),
    # killall -9 php-fpm8.2, pkill -f nginx
    re.compile(r"(?P<cmd>\b(?P<verb>killall|pkill)" + _SIGNAL_OPT + r"\s+(?:-\S+\s+)*['\"]?" + _SVC + r"['\"]?)(?![\w.-])"),
    # kill -TERM $(cat /run/php/php8.2-fpm.pid), kill `pidof nginx`
    re.compile(r"(?P<cmd>\b(?P<verb>kill)" + _SIGNAL_OPT + r"\s+(?P<target>\$\([^)]*\)|`[^`]*`))"),
]
_SVC_ONLY = re.compile(_SVC)
_START = r"(?:/etc/(?:rc\.d/)?init\.d/{svc}\s+start|\b(?:service|invoke-rc\.d)\s+{svc}\s+start|\bsystemctl\s+start\s+{svc})"


@dataclass(frozen=True)
class Finding:
    """One hard stop/restart in one cron line, and what the policy does with it."""
    path: str
    line: int          # 1-based, in the original file
    original: str
    new: str | None    # the replacement line; None when the line is kept or disabled
    action: str        # "replaced", "disabled", "kept", "reported"
    service: str       # "php-fpm" or "nginx"
    why: str


@dataclass
class CronFile:
    path: str
    content: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(f.action in ("replaced", "disabled") for f in self.findings)


def service_kind(name: str) -> str:
    return "php-fpm" if "fpm" in name else "nginx"


def _signal_is_graceful(opts: str) -> bool:
    """True when kill/killall/pkill options name a graceful signal (QUIT, USR1/2, HUP)."""
    words = [w.lstrip("-").upper() for w in opts.split()]
    for i, word in enumerate(words):
        if word in ("S", "SIGNAL") and i + 1 < len(words):
            return words[i + 1] in _GRACEFUL_SIGNALS
        if word.startswith("SIGNAL="):
            return word.split("=", 1)[1] in _GRACEFUL_SIGNALS
        if word in _GRACEFUL_SIGNALS or word.removeprefix("SIG") in _GRACEFUL_SIGNALS:
            return True
    return False


def _is_active(line: str) -> bool:
    """A line cron or a shell would run: not blank, not a comment, not a VAR=value setting."""
    text = line.strip()
    return bool(text) and not text.startswith("#") and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", text)


def _service(match: re.Match[str]) -> str | None:
    """The php-fpm or nginx name a match acts on (for kill: named inside its $(...) target)."""
    if "target" in match.groupdict():
        inner = _SVC_ONLY.search(match["target"])
        return inner["svc"] if inner else None
    return match["svc"]


def _hard_match(line: str) -> tuple[re.Match[str], str, str] | None:
    """The first hard action on the line, the service it hits and why it is hard, or None."""
    for pattern in _HARD:
        for match in pattern.finditer(line):
            verb, svc = match["verb"], _service(match)
            if svc is None:
                continue
            if verb in ("kill", "killall", "pkill"):
                if _signal_is_graceful(match["opts"] or ""):
                    continue
                return match, svc, f"{verb} with a hard signal (TERM/KILL or none) on {svc}"
            if verb in ("stop", "force-stop"):
                if not re.search(_START.format(svc=re.escape(svc)), line[match.end():]):
                    continue
                return match, svc, f"{verb} then start of {svc}: a restart"
            return match, svc, f"{verb} of {svc}: down while it restarts, and SIGTERM with stock scripts"
    return None


def _lone_stop(line: str) -> re.Match[str] | None:
    for pattern in _HARD[:3]:
        match = pattern.search(line)
        if match and match["verb"] in ("stop", "force-stop"):
            return match
    return None


def scan_line(path: str, number: int, line: str, reload_commands: Mapping[str, str], policy: str) -> Finding | None:
    """What `policy` does with one line, or None when the line has nothing to do with us."""
    if not _is_active(line):
        return None
    hard = _hard_match(line)
    if hard is None:
        stop = _lone_stop(line)
        if stop is None:
            return None
        return Finding(path, number, line, None, "kept", service_kind(stop["svc"]),
                       f"{stop['verb']} of {stop['svc']} without a start: graceful (QUIT) once the role ran")
    match, svc, why = hard
    kind = service_kind(svc)
    if policy == "report":
        return Finding(path, number, line, None, "reported", kind, why)
    if policy == "comment":
        return Finding(path, number, line, None, "disabled", kind, why)
    command = reload_commands.get(kind)
    if not command:
        return Finding(path, number, line, None, "reported", kind, why + f" ({kind} is not installed here)")
    new = line[:match.start("cmd")] + command + line[match.end("cmd"):]
    return Finding(path, number, line, new, "replaced", kind, why)


def rewrite(path: str, content: str, reload_commands: Mapping[str, str], policy: str = "reload") -> CronFile:
    """The file with every hard line handled by `policy`, marker comments included."""
    if policy not in POLICIES:
        raise ValueError(f"cron policy must be one of {', '.join(POLICIES)}, not {policy!r}")
    out: list[str] = []
    result = CronFile(path, content)
    for number, line in enumerate(content.split("\n"), start=1):
        finding = scan_line(path, number, line, reload_commands, policy)
        if finding is not None:
            result.findings.append(finding)
        if finding is None or finding.action in ("kept", "reported"):
            out.append(line)
        elif finding.action == "disabled":
            out.append(MARK_DISABLED + line)
        else:
            out.extend([MARK_REPLACED + line, finding.new or ""])
    result.content = "\n".join(out)
    return result


def revert(path: str, content: str) -> CronFile:
    """The file with every line this module changed put back as it was."""
    lines, out, result = content.split("\n"), [], CronFile(path, content)
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(MARK_REPLACED):
            original = line[len(MARK_REPLACED):]
            replaced = lines[i + 1] if i + 1 < len(lines) else None
            out.append(original)
            result.findings.append(Finding(path, i + 1, original, replaced, "restored", "", "reverted"))
            i += 2
            continue
        if line.startswith(MARK_DISABLED):
            original = line[len(MARK_DISABLED):]
            out.append(original)
            result.findings.append(Finding(path, i + 1, original, None, "restored", "", "reverted"))
        else:
            out.append(line)
        i += 1
    result.content = "\n".join(out)
    return result


def _as_dict(cron: CronFile) -> dict[str, Any]:
    return {"path": cron.path, "content": cron.content, "changed": cron.changed or
            any(f.action == "restored" for f in cron.findings),
            "findings": [asdict(f) for f in cron.findings]}


def cron_rewrite(files: Iterable[Mapping[str, str]], reload_commands: Mapping[str, str],
                 policy: str = "reload") -> list[dict[str, Any]]:
    """Filter: [{path, content}] -> one entry per file with findings (new content, findings)."""
    results = [rewrite(f["path"], f["content"], reload_commands, policy) for f in files]
    return [_as_dict(r) for r in results if r.findings]


def cron_revert(files: Iterable[Mapping[str, str]]) -> list[dict[str, Any]]:
    """Filter: [{path, content}] -> one entry per file that had marked lines, restored."""
    results = [revert(f["path"], f["content"]) for f in files]
    return [_as_dict(r) for r in results if r.findings]


class FilterModule:
    """Ansible filters of the opsctl_lifecycle role."""

    def filters(self) -> dict[str, Any]:
        return {"lifecycle_cron_rewrite": cron_rewrite, "lifecycle_cron_revert": cron_revert}
