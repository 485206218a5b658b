"""Issue #11, log rotation: opsctl-logprune run for real (rendered from the role's template, as
root) against trees that www-data can write, and bad inventory values refused up front."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import jinja2
import pytest

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "ansible_collections/opsctl/fleet/roles/opsctl_logrotate/templates/opsctl-logprune.j2"
MB = 1024 * 1024
OLD = time.time() - 40 * 86400

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs opsctl-logprune as root, as cron does")


def www() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam("www-data")
    except KeyError:
        pytest.skip("needs a www-data user")


# ----------------------------------------------------------------------------- the prune script

def render(dest: Path, logs: list[str], *, keep_days: int = 14, max_files: int = 200,
           step_mb: int = 1, pause_ms: int = 20) -> Path:
    """The role's template with Jinja2 and the variables the role passes it."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["to_json"] = json.dumps
    text = env.from_string(TEMPLATE.read_text()).render(
        opsctl_logrotate_nginx_logs=logs[0], opsctl_logrotate_fpms=[{"log": "/nonexistent/php-fpm.log", "logs": ["/nonexistent/php-fpm.log"]}],
        opsctl_logrotate_app_logs=[{"path": p} for p in logs[1:]], opsctl_logrotate_keep_days=keep_days,
        opsctl_logrotate_prune_max_files=max_files, opsctl_logrotate_prune_step_mb=step_mb,
        opsctl_logrotate_prune_step_pause_ms=pause_ms)
    dest.write_text(text)
    dest.chmod(0o700)
    return dest


@pytest.fixture
def tree():
    """A scratch tree whose ancestors www-data can traverse (pytest's tmp_path is root's 0700)."""
    base = Path(tempfile.mkdtemp(prefix="opsctl-sec-logs-", dir="/var/tmp"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base)


def directory(path: Path, owner: pwd.struct_passwd | None = None, mode: int = 0o755) -> Path:
    path.mkdir(parents=True)
    if owner:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    path.chmod(mode)
    return path


def log(path: Path, size: int, *, old: bool = True, owner: pwd.struct_passwd | None = None) -> Path:
    with open(path, "wb") as f:
        f.write(b"x" * min(size, 4096))
        f.truncate(size)
    if owner:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    if old:
        os.utime(path, (OLD, OLD))
    return path


def victim(base: Path, size: int = 3 * MB) -> Path:
    """A root-owned file nobody else may change, bigger than one truncation step."""
    path = directory(base / "etc") / "precious"
    path.write_bytes(os.urandom(size))
    path.chmod(0o644)
    return path


def fingerprint(path: Path) -> tuple[int, str]:
    data = path.read_bytes()
    return len(data), hashlib.sha256(data).hexdigest()


def run(script: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["/usr/bin/python3", str(script), *args], capture_output=True, text=True, timeout=60)


def as_www_data(code: str, *args: str) -> None:
    """What an attacker with www-data's rights (the PHP application's) can do."""
    user = www()
    subprocess.run(["/usr/bin/python3", "-c", code, *args], check=True, timeout=10,
                   user=user.pw_uid, group=user.pw_gid, extra_groups=[])


SWAP = "import os, sys; os.rename(sys.argv[1], sys.argv[1] + '.moved'); os.symlink(sys.argv[2], sys.argv[1])"


def swap_during_truncation(script: Path, target: Path, swap) -> subprocess.CompletedProcess:
    """Start the prune, wait for its first truncation step on `target`, then swap() the name."""
    size = target.stat().st_size
    proc = subprocess.Popen(["/usr/bin/python3", str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while target.stat().st_size == size:
        assert time.monotonic() < deadline and proc.poll() is None, "the prune never started shrinking"
        time.sleep(0.005)
    swap()
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@needs_root
def test_expired_rotated_files_are_deleted_in_bounded_steps_and_nothing_else(tree):
    logs = directory(tree / "nginx")
    big = log(logs / "access.log-20200101-1577836800", 5 * MB)
    expired = [big, log(logs / "error.log-20200101-1577836800.gz", 1000), log(logs / "access.log.3", 10)]
    kept = [log(logs / "access.log", 5 * MB),                            # the live log, however old
            log(logs / "access.log-20991231-1", 2 * MB, old=False),       # rotated, not expired yet
            log(logs / "notes.txt", 10), log(logs / "access.log-notadate", 10),
            log(directory(tree / "other") / "access.log-20200101-1", 10)]  # not a managed directory
    script = render(tree / "prune", [f"{logs}/*.log"], step_mb=1, pause_ms=60)
    sizes: list[int] = []
    fd = os.open(big, os.O_RDONLY)  # watches the file's size through the run, whatever its name does
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            sizes.append(os.fstat(fd).st_size)
            time.sleep(0.005)
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run(script)
    finally:
        watching.set()
        watcher.join()
        os.close(fd)
    assert result.returncode == 0, result.stderr
    assert f"3 files, {5 * MB + 1010} bytes" in result.stdout
    assert not any(p.exists() for p in expired)
    assert all(p.exists() for p in kept)
    # Shrunk one step (1 MB) at a time before the unlink, never freed in one go.
    steps = sorted(set(sizes), reverse=True)
    assert steps == [5 * MB, 4 * MB, 3 * MB, 2 * MB, 1 * MB], steps


@needs_root
def test_at_most_max_files_per_run_oldest_first(tree):
    logs = directory(tree / "nginx")
    files = [log(logs / f"access.log-2020010{i}-1", 10) for i in range(1, 4)]
    for age, path in zip((50, 40, 45), files):
        os.utime(path, (time.time() - age * 86400,) * 2)
    result = run(render(tree / "prune", [f"{logs}/*.log"], max_files=2))
    assert result.returncode == 0 and "2 files, 20 bytes" in result.stdout
    assert [p.exists() for p in files] == [False, True, False]
    dry = run(render(tree / "prune", [f"{logs}/*.log"]), "--dry-run")
    assert "1 files, 10 bytes (dry run)" in dry.stdout and files[1].exists()


@needs_root
def test_name_swapped_for_a_symlink_between_truncation_steps_leaves_the_target_alone(tree):
    """The race in a root-owned directory (the swap done by root): the descriptor, not the path."""
    precious = victim(tree)
    before = fingerprint(precious)
    logs = directory(tree / "nginx")
    target = log(logs / "access.log-20200101-1", 8 * MB)
    script = render(tree / "prune", [f"{logs}/*.log"], step_mb=1, pause_ms=250)
    result = swap_during_truncation(
        script, target, lambda: (target.rename(f"{target}.moved"), target.symlink_to(precious)))
    assert fingerprint(precious) == before
    assert target.is_symlink()  # not unlinked: the name no longer names the file it shrank
    assert "not deleted: it changed since the scan" in result.stderr and result.returncode == 1


@needs_root
def test_www_data_swapping_a_log_for_a_symlink_mid_prune_cannot_touch_roots_files(tree):
    """The attack itself: the PHP application's user owns the log directory and races the prune."""
    user = www()
    precious = victim(tree)
    before = fingerprint(precious)
    logs = directory(tree / "shop", owner=user)
    target = log(logs / "app.log-20200101-1", 8 * MB, owner=user)
    script = render(tree / "prune", [f"{tree}/nginx/*.log", f"{logs}/*.log"], step_mb=1, pause_ms=250)
    result = swap_during_truncation(script, target, lambda: as_www_data(SWAP, str(target), str(precious)))
    assert fingerprint(precious) == before
    assert target.is_symlink() and result.returncode == 1
    assert "pruning there as www-data:" in result.stdout


@needs_root
@pytest.mark.parametrize("owner", ["root", "www-data"])
def test_a_hard_link_to_a_victim_is_not_shrunk(tree, owner):
    """A second name for another file (planted where fs.protected_hardlinks is off)."""
    precious = victim(tree)
    logs = directory(tree / "logs", owner=www() if owner == "www-data" else None)
    link = logs / "app.log-20200101-1"
    os.link(precious, link)
    os.utime(link, (OLD, OLD))
    before = fingerprint(precious)
    result = run(render(tree / "prune", [f"{logs}/*.log"]))
    assert fingerprint(precious) == before and link.exists()
    assert "has 2 hard links; left alone" in result.stderr and result.returncode == 1


@needs_root
def test_a_symlinked_directory_planted_by_www_data_is_not_followed(tree):
    """Sites under a www-data directory: a symlink there must not lead the prune into root's files."""
    user = www()
    sites = directory(tree / "sites", owner=user)
    shop_log = log(directory(sites / "shop" / "logs") / "app.log-20200101-1", 2 * MB)
    precious_dir = directory(tree / "srv" / "logs")
    precious = log(precious_dir / "app.log-20200101-1", 2 * MB)
    before = fingerprint(precious)
    as_www_data("import os, sys; os.symlink(sys.argv[1], sys.argv[2])", str(tree / "srv"), str(sites / "evil"))
    result = run(render(tree / "prune", [f"{sites}/*/logs/*.log"]))
    assert fingerprint(precious) == before
    assert not shop_log.exists()  # the real site's logs are still pruned
    assert "'evil' is a symlink that a user other than root made or can replace" in result.stderr
    assert result.returncode == 1


@needs_root
def test_a_symlinked_log_in_a_www_data_directory_is_never_followed(tree):
    user = www()
    precious = victim(tree)
    before = fingerprint(precious)
    logs = directory(tree / "shop", owner=user)
    as_www_data("import os, sys; os.symlink(sys.argv[1], sys.argv[2])", str(precious), str(logs / "app.log-20200101-1"))
    os.utime(logs / "app.log-20200101-1", (OLD, OLD), follow_symlinks=False)
    result = run(render(tree / "prune", [f"{logs}/*.log"]))
    assert fingerprint(precious) == before and (logs / "app.log-20200101-1").is_symlink()
    assert result.returncode == 0


@needs_root
def test_root_made_symlinks_in_root_directories_are_followed(tree):
    """/var/log/nginx -> /data/nginx, made by root: pruned as usual."""
    real = directory(tree / "data" / "nginx")
    expired = log(real / "access.log-20200101-1", 2 * MB)
    (tree / "log").mkdir()
    (tree / "log" / "nginx").symlink_to("../data/nginx")
    result = run(render(tree / "prune", [f"{tree}/log/nginx/*.log"]))
    assert result.returncode == 0, result.stderr
    assert not expired.exists() and "1 files" in result.stdout


@needs_root
def test_world_writable_directory_is_refused_loudly(tree):
    logs = directory(tree / "tmplogs", mode=0o777)
    expired = log(logs / "app.log-20200101-1", 10)
    result = run(render(tree / "prune", [f"{logs}/*.log"]))
    assert expired.exists()
    assert "world-writable: 1 expired logs there are NOT pruned" in result.stderr
    assert result.returncode == 1 and "1 left alone" in result.stdout


@needs_root
def test_a_www_data_directory_is_pruned_as_www_data(tree):
    """A log directory owned by the application is still pruned, without root's powers."""
    user = www()
    logs = directory(tree / "php", owner=user)
    theirs = log(logs / "www.log-20200101-1", 3 * MB, owner=user)
    roots = log(logs / "slow.log-20200101-1", 3 * MB)
    os.chmod(roots, 0o600)
    result = run(render(tree / "prune", [f"{logs}/*.log"]))
    assert not theirs.exists()
    assert roots.exists()  # www-data cannot shrink it, so root does not do it for them
    assert "pruning there as www-data:" in result.stdout
    assert "slow.log-20200101-1: not deleted: Permission denied" in result.stderr
    assert result.returncode == 1


@needs_root
def test_names_with_escape_sequences_are_printed_escaped(tree):
    logs = directory(tree / "nginx")
    log(logs / "access.log-2020\x1b[2J\n-1", 10)
    result = run(render(tree / "prune", [f"{logs}/*.log"]))
    assert result.returncode == 0 and "\x1b" not in result.stdout
    assert "access.log-2020\\x1b[2J\\n-1" in result.stdout


# ------------------------------------------------------------- bad values, refused up front

def inventory(tmp_path: Path, group_vars: str) -> Path:
    """Two web hosts on a closed loopback port: opsctl must refuse before it connects at all."""
    (tmp_path / "hosts.yml").write_text(
        "all:\n  children:\n    web:\n      hosts:\n"
        "        web1: {ansible_host: 127.0.0.1, ansible_port: 9}\n"
        "        web2: {ansible_host: 127.0.0.1, ansible_port: 9}\n")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(group_vars)
    return tmp_path


def opsctl_run(*args: str) -> subprocess.CompletedProcess:
    import sys
    return subprocess.run([sys.executable, "-m", "opsctl", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO)


def assert_refused(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsctl: error: web1: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr


BAD = {
    # item 12: each of these crashed, passed the plan or silently moved the prune before
    "window as text": ('opsctl_logrotate_window: "04:00"\n',
                       "opsctl_logrotate_window: expected a mapping such as {start: \"04:00\""),
    "negative prune delay": ("opsctl_logrotate_window: {start: \"04:00\", prune_delay_minutes: -120}\n",
                             "opsctl_logrotate_window.prune_delay_minutes: expected a whole number of minutes from 1 to 720, got -120"),
    "unknown time zone": ("opsctl_logrotate_window: {start: \"04:00\", timezone: Mars/Olympus}\n",
                          "opsctl_logrotate_window.timezone: unknown time zone 'Mars/Olympus'"),
    "start as a number": ("opsctl_logrotate_window:\n  start: 4\n",
                          "opsctl_logrotate_window.start: got the number 4: quote the time"),
    "start out of range": ("opsctl_logrotate_window: {start: '24:00'}\n",
                           "opsctl_logrotate_window.start: expected a time HH:MM such as \"04:00\", got '24:00'"),
    "unknown window key": ("opsctl_logrotate_window: {start: \"04:00\", prune_delay: 5}\n",
                           "opsctl_logrotate_window: unknown key 'prune_delay'"),
    # item 8: values that would add lines or syntax to root-owned files
    "postrotate injected by a log path": (
        'opsctl_logrotate_nginx_logs: "/var/log/nginx/*.log {\\n}\\n/tmp/x {\\n postrotate\\n  touch /pwned\\n endscript\\n}\\n#"\n',
        "opsctl_logrotate_nginx_logs: expected an absolute path of letters, digits and"),
    "second path after a space": ("opsctl_logrotate_nginx_logs: /var/log/nginx/*.log /etc/shadow\n",
                                  "got '/var/log/nginx/*.log /etc/shadow'"),
    "relative path": ("opsctl_logrotate_nginx_logs: nginx/*.log\n", "got 'nginx/*.log'"),
    "dot-dot path": ("opsctl_logrotate_php_fpm_log: /var/log/../../etc/shadow\n",
                     "opsctl_logrotate_php_fpm_log: expected a normalized path to a file"),
    "brace in an app log": ("opsctl_logrotate_app_logs: [{path: '/var/log/shop/*.log}'}]\n",
                            "opsctl_logrotate_app_logs[0].path: expected an absolute path"),
    "newline in su owner": ('opsctl_logrotate_app_logs: [{path: /var/log/shop/*.log, owner: "www-data\\n postrotate"}]\n',
                            "opsctl_logrotate_app_logs[0].owner: expected a user or group name"),
    "group without owner": ("opsctl_logrotate_app_logs: [{path: /var/log/shop/*.log, group: adm}]\n",
                            "opsctl_logrotate_app_logs[0]: group is used only with owner"),
    "app logs not a list": ("opsctl_logrotate_app_logs: /var/log/shop/*.log\n",
                            "opsctl_logrotate_app_logs: expected a list of {path, owner, group} mappings"),
    "unit line injected by a number": ('opsctl_logrotate_keep_days: "14\\nExecStartPre=/bin/touch /pwned"\n',
                                       "opsctl_logrotate_keep_days: expected a whole number from 1 to 36500"),
    "zero step": ("opsctl_logrotate_prune_step_mb: 0\n", "opsctl_logrotate_prune_step_mb: expected a whole number from 1"),
    "boolean count": ("opsctl_logrotate_prune_max_files: true\n", "got True"),
    "shell in the backup dir": ("opsctl_logrotate_backup_dir: /var/backups/x;touch /pwned\n",
                                "opsctl_logrotate_backup_dir: expected an absolute path"),
    "cron line in the time zone": ('opsctl_logrotate_window: {timezone: "UTC\\n* * * * * root touch /pwned"}\n',
                                   "opsctl_logrotate_window.timezone: unknown time zone 'UTC\\n* * * * * root touch /pwned'"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_logrotate_plan_refuses_in_one_line(tmp_path, name):
    group_vars, message = BAD[name]
    result = opsctl_run("logrotate", "plan", "--inventory", str(inventory(tmp_path, group_vars)))
    assert_refused(result, message)
    assert "(and 1 more host(s))" in result.stderr


@pytest.mark.parametrize("name", ["window as text", "negative prune delay", "unknown time zone",
                                  "postrotate injected by a log path", "shell in the backup dir"])
@pytest.mark.parametrize("command", [("logrotate", "apply"), ("logrotate", "apply", "--check"),
                                     ("harden", "--tags", "logrotate"), ("harden",)])
def test_apply_and_harden_refuse_before_connecting(tmp_path, name, command):
    group_vars, message = BAD[name]
    result = opsctl_run(*command, "--inventory", str(inventory(tmp_path, group_vars)))
    assert_refused(result, message)


def test_good_values_still_plan(tmp_path):
    good = ("opsctl_logrotate_window: {start: '23:30', minutes: '120', timezone: Asia/Shanghai, prune_delay_minutes: 45}\n"
            "opsctl_logrotate_nginx_logs: /srv/www/*/logs/access-[0-9]*.log\n"
            "opsctl_logrotate_php_fpm_log: /var/log/php8.2-fpm.log\n"
            "opsctl_logrotate_app_logs: [{path: /var/log/shop/*.log, owner: www-data, group: adm}, {path: /var/log/x.log}]\n"
            "opsctl_logrotate_keep_days: '30'\nopsctl_logrotate_prune_step_pause_ms: 0\n"
            "opsctl_logrotate_backup_dir: /var/backups/opsctl/logrotate\n")
    result = opsctl_run("logrotate", "plan", "--format", "json", "--inventory", str(inventory(tmp_path, good)))
    assert result.returncode == 0, result.stderr
    slots = json.loads(result.stdout)
    assert [(s["rotate"], s["prune"], s["timezone"]) for s in slots] == [
        ("23:30", "00:15", "Asia/Shanghai"), ("00:30", "01:15", "Asia/Shanghai")]


def test_templated_values_are_left_to_the_role():
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.logrotate_vars import problems, role_problems

    values = {"opsctl_logrotate_nginx_logs": "{{ log_root }}/nginx/*.log"}
    assert problems(values) == []
    # Inside Ansible the value arrives resolved: a "{{" left in it is data, and refused.
    assert role_problems(values)[0].startswith("opsctl_logrotate_nginx_logs: expected an absolute path")
