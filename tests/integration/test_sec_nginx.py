"""Nothing opsctl writes on a host can break nginx or php-fpm (issue 11, items 1 and 2).

Sites copied into sites-enabled/ as regular files (nginx includes everything there): harden
converges and leaves no backup or temporary file in a directory nginx, php-fpm, logrotate or
cron reads; a failed validation restores the tree exactly; the drain edits the one file nginx
loads (not a decoy copy), and nginx -T shows the server down while drained.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.request

import pytest

from tests import labtools
from tests.conftest import REPO, fresh_lab, opsctl
from tests.labtools import ssh

pytestmark = pytest.mark.lab

SITE = "/etc/nginx/sites-enabled/default"
POOL_DIR = "/etc/php/8.2/fpm/pool.d"
CONFIG_TREES = "/etc/nginx /etc/php /etc/logrotate.d /etc/cron.d /etc/cron.daily /etc/cron.hourly /etc/cron.weekly /etc/cron.monthly"
# Names of backups and temporary files: Ansible's backup: true (NAME.PID.DATE@TIME~), any *~,
# the drain's old mktemp (NAME.opsctl-XXXXXX~), editors' and sed's leftovers.
LEFTOVER = r"-name '*~' -o -name '*.bak' -o -name '*.opsctl-*' -o -name 'sed??????' -o -name '.ansible_tmp*'"
# What the drain of version 1 picked: the first file under /etc/nginx naming the upstream.
OLD_PICK = r"grep -rlE '^\s*upstream\s+opsctl_web\s*\{' /etc/nginx/ | head -n 1"
# Copies of the lb's upstream file that nginx never loads (conf.d/*.conf and sites-enabled/*
# do not match them); conf.d comes before the sites in a directory walk of /etc/nginx.
DECOYS = ("/etc/nginx/conf.d/lb-upstream.conf~", "/etc/nginx/conf.d/lb-upstream.conf.bak",
          "/etc/nginx/sites-available/default.bak")


@pytest.fixture(scope="module")
def slab(lab_name: str):
    """A lab of this module's own, each host's site copied into sites-enabled/ as a regular file."""
    for spec in fresh_lab(f"{lab_name}sn"[:8]):
        for host in spec.hosts:
            ssh(spec, host, f"rm {SITE} && cp -p /etc/nginx/sites-available/default {SITE} && nginx -t -q", check=True)
        yield spec


def tree(spec, host, paths: str) -> str:
    """Every entry under paths with its type, mode, owner, link target and checksum, sorted."""
    script = (f"find {paths} -printf '%p %y %m %u %g %l\\n' | LC_ALL=C sort; "
              f"find {paths} -type f -exec sha256sum {{}} + | LC_ALL=C sort")
    return ssh(spec, host, script, check=True).stdout


def leftovers(spec, host) -> list[str]:
    return ssh(spec, host, f"find {CONFIG_TREES} \\( {LEFTOVER} \\) -print 2>/dev/null").stdout.split()


def nginx_state(spec, host) -> str:
    """The master and its workers: unchanged means nginx was not reloaded."""
    return ssh(spec, host, "cat /run/nginx.pid; pgrep -P $(cat /run/nginx.pid) | sort", check=True).stdout


def harden_playbook(spec, *args: str):
    return labtools.playbook(spec, "opsctl.fleet.harden", *args, timeout=600)


def drain(spec, state: str, *args: str):
    return labtools.playbook(spec, str(REPO / "tests/integration/playbooks/drain.yml"), "--limit", "web1",
                             "-e", f"opsctl_drain_state={state}", *args, timeout=300)


def address(spec, name: str) -> str:
    return next(h.address for h in spec.hosts if h.name == name)


def upstream_lines(dump: str, backend: str) -> list[str]:
    """The server lines of backend in upstream opsctl_web of an nginx -T dump."""
    block = re.search(r"^\s*upstream\s+opsctl_web\s*\{(.*?)^\s*\}", dump, re.M | re.S)
    assert block, dump[-2000:]
    return [line.strip() for line in block.group(1).splitlines() if line.strip().startswith(f"server {backend}:")]


def answering(spec, requests: int = 12) -> set[str]:
    """Which web hosts answer through the balancer (health.php names its host)."""
    names = set()
    for _ in range(requests):
        with urllib.request.urlopen(f"http://{address(spec, 'lb1')}/health.php", timeout=5) as response:
            names.add(response.read().decode().split()[1])
    return names


def test_failed_validation_restores_every_tree_exactly(slab):
    # A mode and group of the team's choosing: the restore must bring them back too.
    ssh(slab, "lb1", f"chgrp www-data {SITE} && chmod 0640 {SITE}", check=True)
    before = {h.name: (tree(slab, h, "/etc/nginx"), nginx_state(slab, h)) for h in slab.hosts}
    run = harden_playbook(slab, "--tags", "nginx", "-e", "opsctl_nginx_worker_processes=lots")
    assert run.returncode != 0
    for host in slab.hosts:
        assert f"{host.name}: nginx -t rejected" in run.stdout, run.stdout[-3000:]
        # Same names, types, modes, owners and contents; the files the run added are gone.
        assert (tree(slab, host, "/etc/nginx"), nginx_state(slab, host)) == before[host.name], host.name
        assert ssh(slab, host, "nginx -t -q").returncode == 0

    webs = slab.by_role("web")
    before = {h.name: tree(slab, h, "/etc/php") for h in webs}
    run = harden_playbook(slab, "--tags", "php_fpm", "-e", "opsctl_php_fpm_pm_max_children=0")
    assert run.returncode != 0
    for host in webs:
        assert f"{host.name}: php-fpm -t rejected" in run.stdout, run.stdout[-3000:]
        assert tree(slab, host, "/etc/php") == before[host.name], host.name


def test_harden_with_copied_sites_converges_and_leaves_nothing_in_config_trees(slab):
    # web2 as an earlier opsctl left it: Ansible backups next to the files it manages. The one in
    # sites-enabled/ is included by nginx, so this host's nginx -t already fails.
    stamp = "4242.2026-01-01@00:00:00~"
    planted = [f"{SITE}.{stamp}", f"/etc/nginx/nginx.conf.{stamp}", f"{POOL_DIR}/www.conf.{stamp}",
               f"/etc/php/8.2/fpm/php-fpm.conf.{stamp}"]
    for path in planted:
        original = path[: -len(stamp) - 1]
        ssh(slab, "web2", f"cp -p {original} '{path}'", check=True)
    assert ssh(slab, "web2", "nginx -t -q").returncode != 0

    # --no-restart: what is written is the point here; test_harden.py proves the restart.
    proc = opsctl("harden", "--inventory", str(slab.inventory_dir), "--no-restart", timeout=1200)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr
    assert "converged" in proc.stdout
    for host in slab.hosts:
        assert ssh(slab, host, "nginx -t -q").returncode == 0, host.name
        assert leftovers(slab, host) == [], host.name
        # The backups are root's alone, outside every tree a daemon reads.
        loose = ssh(slab, host, "find /var/backups/opsctl \\( ! -user root -o -type d ! -perm 0700 \\) -print").stdout
        assert loose == "", (host.name, loose)
    kept = ssh(slab, "lb1", f"ls /var/backups/opsctl/nginx{SITE} /var/backups/opsctl/nginx/etc/nginx/nginx.conf")
    assert kept.returncode == 0, kept.stderr
    for path in planted:
        assert ssh(slab, "web2", f"test -f '/var/backups/opsctl/'*'/earlier{path}'").returncode == 0, path
    # The managed site really is the regular file in sites-enabled, and it is tuned.
    assert "backlog=" in ssh(slab, "lb1", f"test ! -L {SITE} && cat {SITE}", check=True).stdout


@pytest.fixture(scope="module")
def decoys(slab):
    """Copies of the lb's upstream file nginx does not load, planted where version 1 of the
    drain looked first (and sites-available/default, no longer linked, is one as well)."""
    for path in DECOYS:
        ssh(slab, "lb1", f"cp -p {SITE} {path}", check=True)
    picked = ssh(slab, "lb1", OLD_PICK, check=True).stdout.strip()
    assert picked != SITE and picked, picked   # the old drain would have edited a decoy
    return tree(slab, "lb1", " ".join(DECOYS) + " /etc/nginx/sites-available/default")


def test_drain_marks_the_loaded_file_down_and_leaves_the_decoys(slab, decoys):
    web1 = address(slab, "web1")
    site_before = ssh(slab, "lb1", f"cat {SITE}", check=True).stdout
    drained = drain(slab, "drained")
    assert drained.returncode == 0, drained.stdout[-3000:]
    live = upstream_lines(ssh(slab, "lb1", "nginx -T 2>/dev/null", check=True).stdout, web1)
    assert live and all(re.search(r"\sdown;", line) for line in live), live
    assert answering(slab) == {"web2"}
    assert tree(slab, "lb1", " ".join(DECOYS) + " /etc/nginx/sites-available/default") == decoys

    serving = drain(slab, "serving")
    assert serving.returncode == 0, serving.stdout[-3000:]
    live = upstream_lines(ssh(slab, "lb1", "nginx -T 2>/dev/null", check=True).stdout, web1)
    assert live and not any(re.search(r"\sdown;", line) for line in live), live
    assert ssh(slab, "lb1", f"cat {SITE}", check=True).stdout == site_before
    assert "web1" in answering(slab)
    assert tree(slab, "lb1", " ".join(DECOYS) + " /etc/nginx/sites-available/default") == decoys
    assert ssh(slab, "lb1", "test -f /var/backups/opsctl/drain/etc/nginx/sites-enabled/default").returncode == 0


def test_rolling_reload_drains_each_host_in_the_loaded_file(slab, decoys):
    lb = slab.by_role("lb")[0]
    loaded = slab.host_dir(lb) / f"upper{SITE}"
    before = tree(slab, lb, "/etc/nginx")
    seen: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        webs = {h.name: h.address for h in slab.by_role("web")}
        while not stop.is_set():
            try:
                text = loaded.read_text()
            except OSError:
                text = ""
            seen.update(name for name, addr in webs.items()
                        if any(f"server {addr}:" in line and " down" in line for line in text.splitlines()))
            time.sleep(0.01)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        proc = opsctl("reload", "php-fpm", "--rolling", "--inventory", str(slab.inventory_dir))
    finally:
        stop.set()
        thread.join()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert seen == {"web1", "web2"}, seen
    # Back to serving: the whole tree as it was (decoys untouched, no temporary file left).
    assert tree(slab, lb, "/etc/nginx") == before


@pytest.mark.parametrize("balancer, message", [
    ({"config": "/etc/nginx/sites-available/default"},
     "config /etc/nginx/sites-available/default is not a file nginx loads"),
    ({"config": "/etc/nginx/nginx.conf"}, "config /etc/nginx/nginx.conf does not define upstream opsctl_web"),
    ({"upstream": "opsctl_nope"}, "no file nginx loads defines upstream opsctl_nope"),
    ({"quoted": True}, "upstream opsctl_web is defined in 2 files nginx loads"),
    ({"upstream": "opsctl_web|.*"}, "invalid upstream name 'opsctl_web|.*'"),
])
def test_drain_refuses_anything_but_one_loaded_file_and_changes_nothing(slab, decoys, balancer, message):
    quoted = "/etc/nginx/conf.d/zz-quoted.conf"
    balancer = dict(balancer)
    if balancer.pop("quoted", False):
        # A second loaded file with the upstream's header line inside a quoted string.
        ssh(slab, "lb1", f"printf 'server {{\\n\\tlisten 127.0.0.1:8099;\\n\\tlocation / {{ return 200 \"\\n"
                         f"upstream opsctl_web {{\\n\"; }}\\n}}\\n' > {quoted} && nginx -t -q", check=True)
    try:
        before = (tree(slab, "lb1", "/etc/nginx"), nginx_state(slab, "lb1"))
        balancers = [dict({"host": "lb1", "type": "nginx", "upstream": "opsctl_web"}, **balancer)]
        run = drain(slab, "drained", "-e", json.dumps({"opsctl_balancers": balancers}))
        assert run.returncode != 0
        assert message in run.stdout and "nothing changed" in run.stdout, run.stdout[-3000:]
        assert (tree(slab, "lb1", "/etc/nginx"), nginx_state(slab, "lb1")) == before
    finally:
        ssh(slab, "lb1", f"rm -f {quoted}")


def test_drain_moves_a_killed_runs_temporary_file_out_and_proceeds(slab):
    # What version 1 left when killed between its mktemp and its cleanup: a copy in sites-enabled/,
    # which nginx includes (duplicate upstream): every later nginx -t fails.
    leftover = f"{SITE}.opsctl-Ab12Cd~"
    ssh(slab, "lb1", f"cp -p {SITE} {leftover}", check=True)
    assert ssh(slab, "lb1", "nginx -t -q").returncode != 0
    try:
        drained = drain(slab, "drained")
        assert drained.returncode == 0, drained.stdout[-3000:]
        assert ssh(slab, "lb1", f"test ! -e {leftover} && test -f /var/backups/opsctl/drain/leftover{leftover}"
                   ).returncode == 0
        live = upstream_lines(ssh(slab, "lb1", "nginx -T 2>/dev/null", check=True).stdout, address(slab, "web1"))
        assert live and all(re.search(r"\sdown;", line) for line in live), live
    finally:
        ssh(slab, "lb1", f"rm -f {leftover}")
        serving = drain(slab, "serving")
    assert serving.returncode == 0, serving.stdout[-3000:]
