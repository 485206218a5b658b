"""An installed opsctl (pip install .) finds its shipped playbooks, roles and example inventory."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def installed_package_dir() -> Path:
    proc = subprocess.run([sys.executable, "-c", "import opsctl, os; print(os.path.dirname(opsctl.__file__))"],
                          capture_output=True, text=True, cwd="/", check=True)
    return Path(proc.stdout.strip())


def test_installed_opsctl_runs_outside_the_checkout(tmp_path):
    package = installed_package_dir()
    if package.parent == REPO:
        pytest.skip("opsctl is installed in editable mode; scripts/setup installs it for real")
    assert (package / "_share/playbooks").is_dir() and (package / "_share/roles").is_dir()
    script = shutil.which("opsctl", path=str(Path(sys.executable).parent))
    proc = subprocess.run([script, "inventory", "--inventory", "example", "--format", "json", "-v"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(package / "_share/inventories/example") in proc.stdout
