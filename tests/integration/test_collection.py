"""The collection opsctl.fleet on its own, as AWX runs it: built with ansible-galaxy, installed
into an empty collections path of an environment that has ansible-core and nothing else, then
`ansible-playbook opsctl.fleet.harden` converges a stock lab and a second pass changes nothing.
A git URL and a collections/requirements.yml install the same collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, fresh_lab, opsctl
from tests.labtools import recap

pytestmark = pytest.mark.lab

SOURCE = REPO / "ansible_collections/opsctl/fleet"


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def bare_env(collections: Path) -> dict[str, str]:
    """Only this collections path, none of the operator's Ansible settings, no site-packages scan."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
    return dict(env, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
                ANSIBLE_PIPELINING="True")


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> Path:
    """The bin/ of a new virtualenv holding ansible-core (the version opsctl runs) and nothing else."""
    import ansible

    venv = tmp_path_factory.mktemp("bare") / "venv"
    run([sys.executable, "-m", "venv", str(venv)], check=True)
    run([str(venv / "bin/pip"), "install", "-q", f"ansible-core=={ansible.__version__}"], check=True, timeout=600)
    return venv / "bin"


@pytest.fixture(scope="module")
def installed(bare, tmp_path_factory) -> Path:
    """The tarball from ansible-galaxy collection build, installed into an empty collections path."""
    work = tmp_path_factory.mktemp("collection")
    build = run([str(bare / "ansible-galaxy"), "collection", "build", str(SOURCE), "--output-path", str(work)])
    assert build.returncode == 0, build.stdout + build.stderr
    tarball, = work.glob("opsctl-fleet-*.tar.gz")
    path = work / "collections"
    proc = run([str(bare / "ansible-galaxy"), "collection", "install", str(tarball), "-p", str(path)],
               env=bare_env(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path


@pytest.fixture(scope="module")
def collab(lab_name):
    yield from fresh_lab(f"{lab_name}co"[:8], web=1)


def test_the_bare_environment_has_ansible_core_and_no_opsctl(bare, tmp_path):
    assert run([str(bare / "python"), "-c", "import ansible"], cwd=tmp_path).returncode == 0
    proc = run([str(bare / "python"), "-c", "import opsctl"], cwd=tmp_path)
    assert proc.returncode == 1 and "No module named 'opsctl'" in proc.stderr


def test_the_tarball_converges_a_stock_lab_with_ansible_core_alone(bare, installed, collab):
    harden = [str(bare / "ansible-playbook"), "-i", str(collab.inventory_dir), "opsctl.fleet.harden"]
    first = run(harden, env=bare_env(installed), timeout=1200)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    counts = recap(first.stdout)
    assert set(counts) == {h.name for h in collab.hosts} and sum(c["changed"] for c in counts.values()) > 0
    second = run(harden, env=bare_env(installed), timeout=1200)
    assert second.returncode == 0, second.stdout[-4000:]
    assert {h: c["changed"] for h, c in recap(second.stdout).items()} == {h.name: 0 for h in collab.hosts}
    # A new listen.backlog waits for a stop and start (php-fpm keeps its socket across a reload);
    # the play says so and names the drained restart that applies it, as a plain Ansible user runs it.
    assert "pending restart" in first.stdout
    restart = run([str(bare / "ansible-playbook"), "-i", str(collab.inventory_dir), "opsctl.fleet.rolling_reload",
                   "-e", "opsctl_rolling_mode=restart"], env=bare_env(installed), timeout=600)
    assert restart.returncode == 0, restart.stdout[-4000:]
    check = opsctl("check", "--inventory", collab.name)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr


def _committed(path: str) -> str:
    return run(["git", "-C", str(REPO), "show", f"HEAD:ansible_collections/opsctl/fleet/{path}"], check=True).stdout


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the opsctl git repository")
def test_a_git_url_and_a_requirements_file_install_the_committed_collection(bare, tmp_path):
    head = run(["git", "-C", str(REPO), "rev-parse", "HEAD"], check=True).stdout.strip()
    url = f"git+file://{REPO}#/ansible_collections/opsctl/fleet/,{head}"
    requirements = tmp_path / "requirements.yml"
    requirements.write_text(f"collections:\n  - name: file://{REPO}#/ansible_collections/opsctl/fleet/\n"
                            f"    type: git\n    version: {head}\n")
    for name, args in (("url", [url]), ("requirements", ["-r", str(requirements)])):
        path = tmp_path / name
        proc = run([str(bare / "ansible-galaxy"), "collection", "install", *args, "-p", str(path)],
                   env=bare_env(path))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        root = path / "ansible_collections/opsctl/fleet"
        for file in ("roles/opsctl_nginx/tasks/main.yml", "plugins/plugin_utils/capacity.py"):
            assert (root / file).read_text() == _committed(file), (name, file)
        version = json.loads((root / "MANIFEST.json").read_text())["collection_info"]["version"]
        assert f"\nversion: {version}\n" in _committed("galaxy.yml")
        syntax = run([str(bare / "ansible-playbook"), "-i", "localhost,", "--syntax-check", "opsctl.fleet.harden"],
                     env=bare_env(path), cwd=tmp_path)
        assert syntax.returncode == 0, syntax.stdout + syntax.stderr
