"""Cron lines that stop or restart php-fpm or nginx the hard way, and their graceful rewrite.

A nightly `/etc/init.d/php-fpm restart` (seed 003) cut paid orders half way. What a line does is
decided by plugin_utils/service_actions.py, the classifier `opsctl check` uses too: a restart or
a kill with a hard signal is rewritten by the policy; a stop (a service-manager stop, or a
graceful QUIT) is left alone, since taking the node down was the author's intent, and is
reported as kept; reloads and reopens are not findings.

Policies: `reload` rewrites only the hard command (schedule, user, sudo, redirections stay)
into the graceful reload of that service, keeping the original line in a marker comment above
it; `comment` disables the line behind the same marker; `report` changes nothing. `revert`
restores every marked line. A quoted or aliased command can escape the classifier's regular
expressions, which is why the role also reports what it kept.
"""

# F1-F7 and seed NNN: docs/failure-modes.md and docs/incidents.md of the opsctl repository.

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping


MARK_REPLACED = "# opsctl_lifecycle replaced: "
MARK_DISABLED = "# opsctl_lifecycle disabled: "
POLICIES = ("reload", "comment", "report")


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


def _is_active(line: str) -> bool:
    """A line cron or a shell would run: not blank, not a comment, not a VAR=value setting."""
    text = line.strip()
    return bool(text) and not text.startswith("#") and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", text)


def scan_line(path: str, number: int, line: str, reload_commands: Mapping[str, str], policy: str) -> Finding | None:
    """What `policy` does with one line, or None when the line has nothing to do with us."""
    if not _is_active(line):
        return None
    # Imported here: every filter file is imported for every task that uses any filter (plugin_utils/lazy.py).
    from ansible_collections.opsctl.fleet.plugins.plugin_utils import service_actions

    found = service_actions.classify(line)
    if found is None or found.action in ("reload", "reopen"):
        return None
    kind, why = found.service, found.why
    if not found.hard:   # a stop: taking the node down was the author's intent
        return Finding(path, number, line, None, "kept", kind, why)
    if policy == "report" or not found.rewritable:
        return Finding(path, number, line, None, "reported", kind, why)
    if policy == "comment":
        return Finding(path, number, line, None, "disabled", kind, why)
    # The reload of the service the line names (php74-php-fpm beside php-fpm), else of its kind's first.
    command = reload_commands.get(found.name) or reload_commands.get(kind)
    if not command:
        return Finding(path, number, line, None, "reported", kind, why + f" ({kind} is not installed here)")
    new = line[:found.start] + command + line[found.end:]
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
