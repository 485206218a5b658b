"""Where opsctl finds its roles, playbooks and inventories, installed or from a checkout."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def share_dir() -> Path:
    """The directory holding roles/, playbooks/ and inventories/.

    A wheel carries them under opsctl/_share; a checkout (or an editable install) has them
    at the top of the repository, one level above the package.
    """
    installed = _PACKAGE_DIR / "_share"
    if (installed / "playbooks").is_dir():
        return installed
    return _PACKAGE_DIR.parent


def roles_dir() -> Path:
    return share_dir() / "roles"


def playbooks_dir() -> Path:
    return share_dir() / "playbooks"


def state_dir() -> Path:
    """opsctl's own state (labs, run artifacts); OPSCTL_HOME moves it, e.g. for tests."""
    return Path(os.environ.get("OPSCTL_HOME", "/var/lib/opsctl"))


def cache_dir() -> Path:
    """The user's cache for what opsctl can rebuild (compiled catalogs): XDG_CACHE_HOME/opsctl."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "opsctl"


def labs_dir() -> Path:
    return state_dir() / "labs"


def inventory_search_path() -> list[Path]:
    """Where a bare inventory NAME is looked up, first match wins."""
    return [
        Path.cwd() / "inventories",
        labs_dir(),
        share_dir() / "inventories",
    ]


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
