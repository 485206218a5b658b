"""An installed opsctl (pip install .) carries the collection opsctl.fleet and runs it, outside
the checkout; ansible-playbook in the same environment finds the same collection by name."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _installed(code: str, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, check=True)
    return proc.stdout.strip()


def test_installed_opsctl_runs_its_own_collection_outside_the_checkout(tmp_path):
    package = Path(_installed("import opsctl, os; print(os.path.dirname(opsctl.__file__))", tmp_path))
    if package.parent == REPO:
        pytest.skip("opsctl is installed in editable mode; scripts/setup installs it for real")
    collection = Path(_installed("from opsctl import paths; print(paths.collection_dir())", tmp_path))
    assert collection == package.parent / "ansible_collections/opsctl/fleet"
    assert (collection / "galaxy.yml").is_file() and (collection / "roles/opsctl_nginx/tasks/main.yml").is_file()
    assert not (collection / "tests/output").exists()   # ansible-test's scratch stays out of the wheel
    assert _installed("import opsctl; print(opsctl.__version__)", tmp_path) in (collection / "galaxy.yml").read_text()
    script = shutil.which("opsctl", path=str(Path(sys.executable).parent))
    proc = subprocess.run([script, "inventory", "--inventory", "example", "--format", "json", "-v"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(package / "_share/inventories/example") in proc.stdout


def test_ansible_playbook_beside_an_installed_opsctl_finds_the_collection_by_name(tmp_path):
    """No ANSIBLE_COLLECTIONS_PATH: ansible-core looks in site-packages, where pip put it."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("ANSIBLE_")}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                           "--syntax-check", "opsctl.fleet.harden"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
