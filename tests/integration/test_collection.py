"""The collection opsctl.fleet on its own, as AWX runs it: built with ansible-galaxy, installed
into an empty collections path of an environment that has ansible-core and nothing else, then
`ansible-playbook opsctl.fleet.harden` converges a stock lab and a second pass changes nothing.
The lab's clients give up after 1 s (an API client), so the roles write millisecond upstream
timeouts, and the lab serves under them. A git URL and a collections/requirements.yml install
the same collection."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import parse_nginx
from opsctl.lab.load import run_load
from tests.conftest import REPO, fresh_lab, opsctl
from tests.labtools import recap, ssh

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


# An API client that gives up after 1 s: with the lab's p99 of 300 ms no whole second fits
# between them, so nginx reads 800 ms and connects in 100 ms, php-fpm terminates at 1 s.
CLIENT_TIMEOUT_S = 1
MS_TIMEOUTS = {"connect_timeout": 0.1, "send_timeout": 0.8, "read_timeout": 0.8}


@pytest.fixture(scope="module")
def collab(lab_name):
    for spec in fresh_lab(f"{lab_name}co"[:8], web=1):
        for group in ("web", "lb"):   # the event profile, where a user sets it: group_vars
            path = Path(spec.inventory_dir) / "group_vars" / f"{group}.yml"
            data = yaml.safe_load(path.read_text())
            data["opsctl_event"]["client_timeout_s"] = CLIENT_TIMEOUT_S
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        yield spec


@pytest.fixture(scope="module")
def converged(bare, installed, collab):
    """harden twice and the drained restart, with the tarball and ansible-core alone."""
    def playbook(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess:
        return run([str(bare / "ansible-playbook"), "-i", str(collab.inventory_dir), *args],
                   env=bare_env(installed), timeout=timeout)
    first, second = playbook("opsctl.fleet.harden"), playbook("opsctl.fleet.harden")
    return first, second, playbook("opsctl.fleet.rolling_reload", "-e", "opsctl_rolling_mode=restart", timeout=600)


def test_the_bare_environment_has_ansible_core_and_no_opsctl(bare, tmp_path):
    assert run([str(bare / "python"), "-c", "import ansible"], cwd=tmp_path).returncode == 0
    proc = run([str(bare / "python"), "-c", "import opsctl"], cwd=tmp_path)
    assert proc.returncode == 1 and "No module named 'opsctl'" in proc.stderr


def test_the_tarball_converges_a_stock_lab_with_ansible_core_alone(collab, converged):
    first, second, restart = converged
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    counts = recap(first.stdout)
    assert set(counts) == {h.name for h in collab.hosts} and sum(c["changed"] for c in counts.values()) > 0
    assert second.returncode == 0, second.stdout[-4000:]
    assert {h: c["changed"] for h, c in recap(second.stdout).items()} == {h.name: 0 for h in collab.hosts}
    # A new listen.backlog waits for a stop and start (php-fpm keeps its socket across a reload);
    # the play says so and names the drained restart that applies it, as a plain Ansible user runs it.
    assert "pending restart" in first.stdout
    assert restart.returncode == 0, restart.stdout[-4000:]
    check = opsctl("check", "--inventory", collab.name)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr


def test_a_one_second_client_gets_millisecond_timeouts_and_is_served(collab, converged):
    assert all(proc.returncode == 0 for proc in converged), [p.stdout[-2000:] for p in converged]
    lb, web = collab.by_role("lb")[0], collab.by_role("web")[0]
    # Every proxied location of both hosts, as nginx -T shows them (800ms, 100ms), read by the probe's parser.
    for host, kind in ((lb, "proxy"), (web, "fastcgi")):
        dump = ssh(collab, host, "nginx -T 2>&1", check=True).stdout
        assert f"{kind}_read_timeout 800ms;" in dump and f"{kind}_connect_timeout 100ms;" in dump
        locations = [loc for loc in parse_nginx(dump, 0, cpus=1)["locations"] if loc["kind"] == kind]
        assert locations and all({k: loc[k] for k in MS_TIMEOUTS} == MS_TIMEOUTS for loc in locations), locations
    # php-fpm's whole seconds sit just above nginx's read timeout: nginx answers first.
    fpm = ssh(collab, web, "php-fpm8.2 -tt 2>&1", check=True).stdout
    assert set(re.findall(r"request_terminate_timeout = (\w+)", fpm)) == {"1s"}, fpm
    assert re.search(r"process_control_timeout = 1s", fpm), fpm
    # Served through the balancer by clients that give up after 1 s: no failure.
    load = run_load(lb.address, "/work.php", seconds=4, concurrency=4, timeout=CLIENT_TIMEOUT_S)
    assert load.sent > 40 and load.non_2xx == 0 and load.errors == 0, load
    # A request stuck in php-fpm: nginx answers 504 before the client gives up.
    conn = http.client.HTTPConnection(lb.address, 80, timeout=5)
    started = time.monotonic()
    conn.request("GET", "/work.php?ms=3000")
    status, elapsed = conn.getresponse().status, time.monotonic() - started
    conn.close()
    assert status == 504 and 0.8 <= elapsed < CLIENT_TIMEOUT_S, (status, elapsed)


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
