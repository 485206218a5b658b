"""Which of a role's files must be written (filter opsctl.fleet.stale_files).

Why: a converged run should cost little more than reading state. A role works out every file's
new content on the controller, reads the files as they are in one opsctl.fleet.file_state run, and
only the files whose content, owner, group or mode differ reach a write task (docs/architecture.md,
"Converged runs"). Stdlib only: the role runs under plain ansible-playbook and AWX.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

_DEFAULTS = {"owner": "root", "group": "root", "mode": "0644"}


def _wanted(entry: Mapping) -> dict:
    return {**_DEFAULTS, **{k: entry[k] for k in _DEFAULTS if k in entry}}


def _differs(entry: Mapping, before: Mapping) -> bool:
    if not before.get("exists"):
        return True
    want = _wanted(entry)
    if any(str(want[k]) != str(before.get(k)) for k in want):
        return True
    if "content" not in entry:   # a directory: its type, owner, group and mode are all there is
        return before.get("type") != "directory"
    return hashlib.sha1(str(entry["content"]).encode("utf-8")).hexdigest() != before.get("checksum")


def stale_files(desired: Sequence[Mapping], state: Mapping) -> list[dict]:
    """The entries of `desired` ({dest, content[, owner, group, mode]}) whose file differs from
    `state` (the `files` of an opsctl.fleet.file_state result), each with its owner, group and mode
    filled in and `before` (the file as it was: what a failed validation restores). An entry
    without content is a directory: it differs when the path is not a directory with that owner,
    group and mode."""
    files = state.get("files", state) if isinstance(state, Mapping) else {}
    out = []
    for entry in desired:
        before = files.get(entry["dest"]) or {"exists": False}
        if _differs(entry, before):
            out.append({**dict(entry), **_wanted(entry), "before": dict(before)})
    return out


class FilterModule:
    def filters(self):
        return {"stale_files": stale_files}
