"""Shared fixtures: the CLI runner, bad inventories, and a real lab for integration tests."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure() -> None:
    # A shell starts a background command (scripts/test's second pytest) with SIGINT ignored,
    # and an ignored signal stays ignored in every child: the opsctl a test runs would shrug off
    # the Ctrl-C the test sends it (watch's end). A handler of our own is reset at exec instead.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def opsctl(*args: str, check: bool = False, timeout: float = 600,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed opsctl exactly as a user would (env: variables added to the run's)."""
    proc = subprocess.run([sys.executable, "-m", "opsctl", *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **env) if env else None)
    if check and proc.returncode != 0:
        raise AssertionError(f"opsctl {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def lab_available() -> str | None:
    """Why the lab cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "lab tests need root"
    for binary in ("ip", "/usr/sbin/sshd", "/usr/sbin/nginx"):
        if not shutil.which(binary):
            return f"lab tests need {binary}"
    return None


@pytest.fixture(scope="session")
def lab_name() -> str:
    # A separate name per checkout lets several labs (and test runs) share one machine.
    return os.environ.get("OPSCTL_TEST_LAB", "t")


@pytest.hookimpl(tryfirst=True)   # before -m selects by the marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `own_lab` the lab modules that bring up no shared lab, only labs of their own:
    scripts/test runs them in a second pytest beside the rest. The modules that share the
    session's `lab` stay in one run, in their usual order, since they build on one another's
    state (the stock lab is checked before test_harden hardens it)."""
    sharing = {item.path for item in items if "lab" in getattr(item, "fixturenames", ())}
    for item in items:
        if item.path.parent.name == "integration" and item.path not in sharing:
            item.add_marker(pytest.mark.own_lab)


def fresh_lab(name: str, web: int = 2, flavor: str = "debian", *options: str):
    """Bring a lab up from scratch for the tests, yield its spec, and take it down afterwards.
    OPTIONS: more `opsctl lab up` options (--bastion)."""
    reason = lab_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    opsctl("lab", "down", "--name", name)
    opsctl("lab", "up", "--name", name, "--web", str(web), "--flavor", flavor, *options, check=True)
    from opsctl.lab import fleet

    yield fleet.load_spec(name)
    opsctl("lab", "down", "--name", name, check=True)


@pytest.fixture(scope="session")
def lab(lab_name: str):
    """A real lab (1 lb + 2 web hosts) for the whole test session, removed at the end."""
    yield from fresh_lab(lab_name)
