"""A cache of what Ansible's parser made of a static inventory, so a repeated run skips Ansible.

Importing Ansible and parsing an inventory cost about half a second of CPU on every run of
`opsctl check`, a command meant to answer in seconds and to be run again and again the night
before a sale. The cache holds the parse of a static inventory only (YAML, INI or JSON files,
group_vars and host_vars): an entry is keyed on every file's path and contents, the
ANSIBLE_* environment, the ansible.cfg files Ansible would read, the --limit and the versions
of opsctl and ansible-core, so any edit is a miss. Dynamic inventories (executable scripts,
inventory plugin configs) and vaulted files (or values) are never cached. Entries are private
files (0600 in a 0700 directory) in the user's cache directory, and hold only the variables
opsctl reads, never a secret. An entry or directory that another user owns or could write, or
a symlink, is ignored: the cache decides which hosts opsctl connects to, and how.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
from importlib import metadata
from pathlib import Path
from typing import Any

from opsctl import __version__
from opsctl.paths import inventory_files, is_private, open_private_cache

FORMAT = 3                                # what a snapshot holds; a change is a miss
_SUFFIX = f".f{FORMAT}.json"              # entries of older formats may hold passwords: removed
KEEP = 32                                 # entries kept; the oldest go first
MAX_BYTES = 4 * 1024 * 1024               # inventories larger than this are not read twice
_DYNAMIC = re.compile(rb"^\s*plugin\s*:", re.MULTILINE)
_VAULT = b"$ANSIBLE_VAULT"


DIRECTORY = "inventory"                   # under opsctl.paths.cache_dir()


def _files(source: Path) -> list[tuple[Path, bytes]] | None:
    """Every file Ansible reads for this source with its bytes, or None when it is not static."""
    files, total = [], 0
    for path in inventory_files(source):
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
    parts = [f"opsctl {__version__} format {FORMAT}", f"ansible-core {ansible_version}", f"source {source}", f"limit {limit}"]
    parts += sorted(f"env {k}={v}" for k, v in os.environ.items() if k.startswith("ANSIBLE_"))
    # Contents, not times: an edit within one timestamp tick must still be a miss.
    parts += [f"{path} {hashlib.sha256(data).hexdigest()}" for path, data in files]
    parts += [_stat_line(p) for p in _ansible_config_files()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def read(key: str) -> dict[str, Any] | None:
    """The entry for KEY, or None when there is none or it is not this user's private file."""
    directory = open_private_cache(DIRECTORY)
    if directory is None:
        return None
    try:
        fd = os.open(entry_name(key), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
        with os.fdopen(fd) as entry:
            st = os.fstat(entry.fileno())
            if not stat.S_ISREG(st.st_mode) or not is_private(st) or st.st_size > MAX_BYTES:
                return None
            data = json.loads(entry.read())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None
    finally:
        os.close(directory)


def write(key: str, snapshot: dict[str, Any]) -> None:
    """Store an entry atomically; a cache that cannot be written is only a slower next run."""
    directory = open_private_cache(DIRECTORY, create=True)
    if directory is None:
        return
    tmp = f".{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=directory)
        with os.fdopen(fd, "w") as out:
            json.dump(snapshot, out)
        os.replace(tmp, entry_name(key), src_dir_fd=directory, dst_dir_fd=directory)
        tmp = ""
        _prune(directory)
    except (OSError, TypeError, ValueError):
        pass
    finally:
        if tmp:
            _unlink(tmp, directory)
        os.close(directory)


def entry_name(key: str) -> str:
    return f"{key}{_SUFFIX}"


def _prune(directory: int) -> None:
    """Keep the newest KEEP entries; remove every entry an older opsctl wrote (before opsctl
    kept only the variables it reads, an entry held every host variable, passwords too)."""
    entries = []
    for name in os.listdir(directory):
        if name.endswith(".json") and not name.endswith(_SUFFIX):
            _unlink(name, directory)
        elif name.endswith(_SUFFIX):
            try:
                entries.append((os.stat(name, dir_fd=directory, follow_symlinks=False).st_mtime, name))
            except OSError:
                pass
    for _, old in sorted(entries)[:-KEEP]:
        _unlink(old, directory)


def _unlink(name: str, directory: int) -> None:
    try:
        os.unlink(name, dir_fd=directory)
    except OSError:
        pass
