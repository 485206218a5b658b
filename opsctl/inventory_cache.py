"""A cache of what Ansible's parser made of a static inventory, so a repeated run skips Ansible.

Importing Ansible and parsing an inventory cost about half a second of CPU on every run of
`opsctl check`, a command meant to answer in seconds and to be run again and again the night
before a sale. The cache holds the parse of a static inventory only (YAML, INI or JSON files,
group_vars and host_vars): an entry is keyed on every file's path and contents, the
ANSIBLE_* environment, the ansible.cfg files Ansible would read, the --limit and the versions
of opsctl and ansible-core, so any edit is a miss. Dynamic inventories (executable scripts,
inventory plugin configs) and vaulted files are never cached. Entries are private files
(0600 in a 0700 directory) in the user's cache directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from opsctl import __version__
from opsctl.paths import cache_dir

KEEP = 32                                 # entries kept; the oldest go first
MAX_BYTES = 4 * 1024 * 1024               # inventories larger than this are not read twice
_DYNAMIC = re.compile(rb"^\s*plugin\s*:", re.MULTILINE)
_VAULT = b"$ANSIBLE_VAULT"


def _directory() -> Path:
    return cache_dir() / "inventory"


def _files(source: Path) -> list[tuple[Path, bytes]] | None:
    """Every file Ansible reads for this source with its bytes, or None when it is not static."""
    if source.is_dir():
        paths = [p for p in source.rglob("*") if p.is_file()]
    else:
        paths = [source] + [p for d in ("group_vars", "host_vars") if (source.parent / d).is_dir()
                            for p in (source.parent / d).rglob("*") if p.is_file()]
    files, total = [], 0
    for path in sorted(paths):
        if os.access(path, os.X_OK):
            return None                    # a script inventory: its answer can change any time
        data = path.read_bytes()
        total += len(data)
        if total > MAX_BYTES or _VAULT in data or _DYNAMIC.search(data):
            return None
        files.append((path, data))
    return files


def _ansible_config_files() -> list[Path]:
    home = Path.home()
    named = os.environ.get("ANSIBLE_CONFIG")
    return [Path(p) for p in (named, "ansible.cfg", home / ".ansible.cfg", "/etc/ansible/ansible.cfg") if p]


def _stat_line(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return f"{path} absent"
    return f"{path.resolve()} {st.st_size} {st.st_mtime_ns} {st.st_ino}"


def key_for(source: Path, limit: str | None) -> str | None:
    """The cache key for this inventory as it is on disk now, or None when it is not cacheable."""
    try:
        files = _files(source)
        if files is None:
            return None
        ansible_version = metadata.version("ansible-core")
    except (OSError, metadata.PackageNotFoundError):
        return None
    parts = [f"opsctl {__version__}", f"ansible-core {ansible_version}", f"source {source}", f"limit {limit}"]
    parts += sorted(f"env {k}={v}" for k, v in os.environ.items() if k.startswith("ANSIBLE_"))
    # Contents, not times: an edit within one timestamp tick must still be a miss.
    parts += [f"{path} {hashlib.sha256(data).hexdigest()}" for path, data in files]
    parts += [_stat_line(p) for p in _ansible_config_files()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def read(key: str) -> dict[str, Any] | None:
    try:
        return json.loads((_directory() / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None


def write(key: str, snapshot: dict[str, Any]) -> None:
    """Store an entry atomically; a cache that cannot be written is only a slower next run."""
    directory = _directory()
    tmp = None
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")   # created 0600
        with os.fdopen(fd, "w") as out:
            json.dump(snapshot, out)
        os.replace(tmp, directory / f"{key}.json")
        tmp = None
        entries = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-KEEP]:
            old.unlink(missing_ok=True)
    except (OSError, TypeError, ValueError):
        pass
    finally:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
