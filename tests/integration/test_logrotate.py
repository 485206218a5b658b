"""Log rotation on the lab: scheduled at each host's slot, reopened by signal, pruned gently."""

import subprocess
import time

import pytest

from opsctl.lab.load import BackgroundLoad
from tests import labtools
from tests.labtools import recap, ssh
from tests.conftest import opsctl

pytestmark = pytest.mark.lab


def playbook(spec) -> subprocess.CompletedProcess:
    return labtools.playbook(spec, "opsctl.fleet.logrotate", timeout=600)


@pytest.fixture(scope="module")
def applied(lab):
    first = playbook(lab)
    assert first.returncode == 0, first.stdout[-3000:]
    return lab, first


def test_second_run_changes_nothing(applied):
    lab, _ = applied
    second = playbook(lab)
    assert second.returncode == 0
    counts = recap(second.stdout)
    assert set(counts) == {h.name for h in lab.hosts}
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), counts


def cron_times(lab, host) -> tuple[str, str]:
    lines = [l.split() for l in ssh(lab, host, "cat /etc/cron.d/opsctl-logrotate").stdout.splitlines()
             if l and l[0].isdigit()]
    rotate = next(l for l in lines if "logrotate" in l[-2] or l[-1] == "/etc/logrotate.conf")
    prune = next(l for l in lines if l[-1].endswith("opsctl-logprune"))
    return (f"{int(rotate[1]):02d}:{int(rotate[0]):02d}", f"{int(prune[1]):02d}:{int(prune[0]):02d}")


def test_effective_schedule_is_the_plan_spread_and_outside_the_event(applied):
    lab, _ = applied
    planned = {p["host"]: p for p in __import__("json").loads(
        opsctl("logrotate", "plan", "--inventory", lab.name, "--format", "json", check=True).stdout)}
    web_times = []
    for host in lab.hosts:
        rotate, prune = cron_times(lab, host)  # lab hosts run UTC, the default window's zone
        assert (rotate, prune) == (planned[host.name]["rotate"], planned[host.name]["prune"])
        assert "04:00" <= rotate < "05:00"
        if host.role == "web":
            web_times.append(rotate)
    assert len(set(web_times)) == len(web_times)  # no two web hosts behind lb1 share a slot
    # The lab's event (00:00 Asia/Shanghai, 1 h prepare) protects 15:00-18:00 UTC.
    assert all(not ("15:00" <= p["rotate"] < "18:00") for p in planned.values())
    web1 = lab.hosts[1]
    daily = ssh(lab, web1, "ls /etc/cron.daily").stdout.split()
    assert "logrotate" not in daily and "dpkg" in daily  # only logrotate moved out of cron.daily


def pids(lab, host) -> tuple[str, str]:
    out = ssh(lab, host, "cat /run/nginx.pid /run/php/php8.2-fpm.pid").stdout.split()
    return out[0], out[1]


def test_forced_rotation_under_load_reopens_without_restart(applied):
    lab, _ = applied
    web1 = next(h for h in lab.hosts if h.name == "web1")
    before = pids(lab, web1)
    with BackgroundLoad(web1.address, "/work.php?ms=20", seconds=4, concurrency=6) as load:
        time.sleep(1.5)
        rotated = ssh(lab, web1, "/usr/sbin/logrotate -f /etc/logrotate.conf")
    assert rotated.returncode == 0, rotated.stderr
    result = load.result
    assert result.sent > 50 and result.non_2xx == 0 and result.errors == 0, result
    assert pids(lab, web1) == before
    # Requests after the rotation went to the new files, by the same masters.
    listing = ssh(lab, web1, "stat -c '%s %n' /var/log/nginx/access.log /var/log/nginx/access.log-*").stdout
    sizes = [int(line.split()[0]) for line in listing.splitlines()]
    assert len(sizes) >= 2 and sizes[0] > 0
    reopened = ssh(lab, web1, "grep -c 'error log file re-opened' /var/log/php8.2-fpm.log").stdout.strip()
    assert int(reopened or 0) >= 1


def test_prune_deletes_only_expired_rotated_logs_in_bounded_steps(applied):
    lab, _ = applied
    web2 = next(h for h in lab.hosts if h.name == "web2")
    plant = ("cd /var/log/nginx && for i in 1 2 3; do fallocate -l 300M access.log-2026010$i-1; "
             "touch -d '40 days ago' access.log-2026010$i-1; done && fallocate -l 10M access.log-20991231-1 "
             "&& echo keep > notes.txt && touch -d '40 days ago' notes.txt")
    assert ssh(lab, web2, plant).returncode == 0
    dry = ssh(lab, web2, "/usr/local/sbin/opsctl-logprune --dry-run").stdout
    assert "3 files" in dry and "dry run" in dry
    assert ssh(lab, web2, "ls /var/log/nginx/access.log-2026010*").stdout.count("\n") == 3
    run = ssh(lab, web2, "ionice -c3 nice -n 19 /usr/local/sbin/opsctl-logprune")
    assert run.returncode == 0 and "3 files, 943718400 bytes" in run.stdout
    left = ssh(lab, web2, "ls /var/log/nginx").stdout.split()
    assert not any(name.startswith("access.log-2026010") for name in left)
    assert "access.log-20991231-1" in left and "notes.txt" in left
