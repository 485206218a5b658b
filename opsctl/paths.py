"""Where opsctl finds its collection (roles, playbooks, rules) and inventories, installed or
from a checkout."""

from __future__ import annotations

import os
import stat
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent

COLLECTION = "opsctl.fleet"


def share_dir() -> Path:
    """The directory holding the example inventories/.

    A wheel carries them under opsctl/_share; a checkout (or an editable install) has them at
    the top of the repository, one level above the package.
    """
    installed = _PACKAGE_DIR / "_share"
    if (installed / "inventories").is_dir():
        return installed
    return _PACKAGE_DIR.parent


def collection_dir() -> Path:
    """The collection opsctl.fleet whose rules this process imported: its roles and playbooks
    are the ones opsctl runs, so the CLI and ansible-playbook use one copy of every rule. A
    wheel carries it in site-packages/ansible_collections/; a checkout at its top."""
    from ansible_collections.opsctl.fleet.plugins.plugin_utils import durations

    return Path(durations.__file__).resolve().parents[2]


def collections_root() -> Path:
    """The directory to put on ANSIBLE_COLLECTIONS_PATH for collection_dir()."""
    return collection_dir().parents[2]


def collections_env() -> dict[str, str]:
    """ANSIBLE_COLLECTIONS_PATH for an ansible-playbook that must run this opsctl's collection:
    first on the path, before any other copy of opsctl.fleet the operator has installed."""
    given = os.environ.get("ANSIBLE_COLLECTIONS_PATH", "")
    return {"ANSIBLE_COLLECTIONS_PATH": os.pathsep.join(p for p in (str(collections_root()), given) if p)}


def roles_dir() -> Path:
    return collection_dir() / "roles"


def playbooks_dir() -> Path:
    return collection_dir() / "playbooks"


def state_dir() -> Path:
    """opsctl's own state (labs, run artifacts); OPSCTL_HOME moves it, e.g. for tests."""
    return Path(os.environ.get("OPSCTL_HOME", "/var/lib/opsctl"))


def cache_dir() -> Path:
    """The user's cache for what opsctl can rebuild (parsed inventories): XDG_CACHE_HOME/opsctl."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opsctl"


def is_private(st: os.stat_result) -> bool:
    """Owned by the user running opsctl and writable by nobody else."""
    return st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def open_private_cache(name: str, create: bool = False) -> int | None:
    """A descriptor of cache_dir()/NAME when it and cache_dir() are real directories (no
    symlink) that only this user can change, else None: a cache another user could write to is
    neither read nor written. With create, missing directories are made 0700. Open files
    relative to the descriptor (dir_fd=) so that nobody can swap the directory meanwhile."""
    fd = None
    try:
        if create:
            cache_dir().parent.mkdir(parents=True, exist_ok=True)
        for part in (cache_dir(), Path(name)):
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            parent = fd
            fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
            if parent is not None:
                os.close(parent)
            if not is_private(os.fstat(fd)):
                os.close(fd)
                return None
        return fd
    except OSError:
        if fd is not None:
            os.close(fd)
        return None


def labs_dir() -> Path:
    return state_dir() / "labs"


def inventory_search_path() -> list[Path]:
    """Where a bare inventory NAME is looked up, first match wins."""
    return [
        Path.cwd() / "inventories",
        labs_dir(),
        share_dir() / "inventories",
    ]


def inventory_files(source: Path) -> list[Path]:
    """The files Ansible reads for an inventory: every file of a directory source; a file source
    and the group_vars/ and host_vars/ next to it."""
    if source.is_dir():
        return sorted(p for p in source.rglob("*") if p.is_file())
    return [source] + sorted(p for d in ("group_vars", "host_vars") if (source.parent / d).is_dir()
                             for p in (source.parent / d).rglob("*") if p.is_file())


def resolve_inventory(name_or_path: str) -> Path:
    """Map `--inventory prod` to inventories/prod, or accept any inventory file or directory."""
    from opsctl.errors import OpsctlError

    given = Path(name_or_path).expanduser()
    if given.exists():
        return given.resolve()
    if "/" not in name_or_path:
        for base in inventory_search_path():
            candidate = base / name_or_path
            # A lab keeps its inventory in a subdirectory next to its keys and state.
            for path in (candidate / "inventory", candidate):
                if path.exists():
                    return path.resolve()
    searched = ", ".join(str(p) for p in inventory_search_path())
    raise OpsctlError(
        f"inventory '{name_or_path}' not found: not a path, and no such name under {searched}"
    )
