"""The probe's raw output parsed into facts: nginx config, php-fpm -tt, ss, init scripts, cron."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import (parse, parse_crontabs, parse_init_scripts, parse_listeners, parse_nginx,
                                parse_php_fpm, parse_samples)

from opsctl.sshexec import target_for

NGINX_T = """nginx: configuration file /etc/nginx/nginx.conf test is successful
# configuration file /etc/nginx/nginx.conf:
worker_processes 4;
worker_rlimit_nofile 20000;
events { worker_connections 4096; }
http {
    fastcgi_read_timeout 8s;   # a comment; with a brace { in it
    include /etc/nginx/sites-enabled/*;
}
# configuration file /etc/nginx/sites-enabled/shop:
upstream app { server 10.0.0.1:80 max_fails=10 fail_timeout=5m; server 10.0.0.2:80 down; }
server {
    listen 80 backlog=1024;
    server_name shop.example;
    location / { proxy_pass http://app; proxy_read_timeout 3s; }
    location ~ \\.php$ {
        fastcgi_pass unix:/run/php.sock;
        location ~ /slow { fastcgi_pass unix:/run/php.sock; fastcgi_read_timeout 1m30s; }
    }
}
"""


def test_nginx_effective_timeouts_with_inheritance_and_defaults():
    nginx = parse_nginx(NGINX_T, 0, cpus=2)
    assert (nginx["worker_processes"], nginx["worker_connections"], nginx["worker_rlimit_nofile"]) == (4, 4096, 20000)
    assert nginx["listens"] == [{"server": "shop.example", "address": "80", "backlog": 1024, "backlog_asked": 1024}]
    locs = {l["location"]: l for l in nginx["locations"]}
    assert (locs["/"]["kind"], locs["/"]["read_timeout"], locs["/"]["connect_timeout"]) == ("proxy", 3, 60)
    assert locs["~ \\.php$"]["read_timeout"] == 8  # inherited from http
    assert locs["~ \\.php$ > ~ /slow"]["read_timeout"] == 90
    servers = nginx["upstreams"][0]["servers"]
    assert (servers[0]["max_fails"], servers[0]["fail_timeout"], servers[1]["down"]) == (10, 300, True)


def test_nginx_failing_config_is_reported():
    nginx = parse_nginx('nginx: [emerg] unknown directive "x" in /etc/nginx/nginx.conf:1\n', 1, cpus=2)
    assert nginx["error"].startswith("nginx: [emerg]") and nginx["locations"] == []


FPM_TT = """### master running 812 /usr/sbin/php-fpm8.2 /etc/php/8.2/fpm/php-fpm.conf
PHP 8.2.36 (fpm-fcgi) (built: Nov 18 2026 20:02:04)
[global]
\tprocess_control_timeout = 10s
[www]
\tlisten = /run/php/php8.2-fpm.sock
\tlisten.backlog = -1
\tpm = static
\tpm.max_children = 20
\tpm.max_requests = 500
\trequest_terminate_timeout = 4s
\trequest_slowlog_timeout = 0s
\tpm.status_path = undefined
"""


def test_php_fpm_tt_and_backlog_following_somaxconn():
    fpm = parse_php_fpm(FPM_TT, somaxconn=4096)
    assert fpm["version"] == "8.2" and fpm["global"]["process_control_timeout"] == 10
    pool = fpm["pools"][0]
    assert (pool["listen_backlog"], pool["listen_backlog_effective"], pool["pm"], pool["pm_max_requests"]) == (-1, 4096, "static", 500)
    assert pool["request_terminate_timeout"] == 4 and pool["status_path"] is None
    assert parse_php_fpm("", 4096)["present"] is False


def test_listeners_and_owners():
    text = ('u_str LISTEN 3 4096 /run/php/php8.2-fpm.sock 68754 * 0 users:(("php-fpm8.2",pid=27,fd=6),("php-fpm8.2",pid=25,fd=8))\n'
            'tcp   LISTEN 0 511 0.0.0.0:80 0.0.0.0:* users:(("nginx",pid=40,fd=5))\n')
    fpm, web = parse_listeners(text)
    assert (fpm["kind"], fpm["owner"], fpm["recv_q"], fpm["send_q"], fpm["pids"]) == ("unix", "php-fpm", 3, 4096, [25, 27])
    assert (web["port"], web["owner"]) == (80, "nginx")


def test_init_script_stop_schedule_resolves_variables():
    text = ("### file /etc/init.d/php8.2-fpm\n22:TIMEOUT=30\n"
            "67:\tstart-stop-daemon --stop --quiet --retry=QUIT/$TIMEOUT/TERM/5/KILL/5 --pidfile $PIDFILE\n"
            "76:\tstart-stop-daemon --stop --quiet --oknodo --retry=0/30/TERM/5/KILL/5 --exec $DAEMON\n"
            "92:\tstart-stop-daemon --stop --signal USR2 --quiet --pidfile $PIDFILE\n"
            "### file /etc/init.d/nginx\n23:STOP_SCHEDULE=\"${STOP_SCHEDULE:-QUIT/5/TERM/5/KILL/5}\"\n"
            "68:\tstart-stop-daemon --stop --quiet --retry=$STOP_SCHEDULE --pidfile $PID\n")
    init = parse_init_scripts(text)
    assert init["php-fpm"]["stop_schedule"] == "QUIT/30/TERM/5/KILL/5" and init["php-fpm"]["reload_signal"] == "USR2"
    assert init["nginx"]["stop_signal"] == "QUIT"
    centos = parse_init_scripts("### file /etc/init.d/php-fpm\n40:\tkillproc -p ${pidfile} php-fpm\n")
    assert centos["php-fpm"]["stop_signal"] == "TERM"


def test_cron_entries_and_actions():
    text = ("### file /etc/crontab system\nSHELL=/bin/sh\n"
            "25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }\n"
            "### file /etc/cron.d/restart system\n28 5 * * * root /etc/init.d/php-fpm restart\n"
            "### file /var/spool/cron/crontabs/ops user:ops\n@daily sudo systemctl reload nginx\n"
            "### script /etc/cron.daily/logrotate daily\n13:/usr/sbin/logrotate /etc/logrotate.conf\n")
    cron = parse_crontabs(text)
    restart = next(e for e in cron["entries"] if e["source"] == "/etc/cron.d/restart")
    assert (restart["schedule"], restart["service"], restart["action"], restart["user"]) == ("28 5 * * *", "php-fpm", "restart", "root")
    user = next(e for e in cron["entries"] if e["user"] == "ops")
    assert (user["schedule"], user["service"], user["action"]) == ("@daily", "nginx", "reload")
    assert cron["scripts"][0]["logrotate"]


def test_samples_delta():
    first = "TcpExt: ListenOverflows ListenDrops\nTcpExt: 10 12\ncpu  100 0 100 700 100 0 0 0 0 0\nctxt 1000\n100.0\n"
    second = "TcpExt: ListenOverflows ListenDrops\nTcpExt: 15 17\ncpu  100 0 100 750 150 0 0 0 0 0\nctxt 3000\n101.0\n"
    sample = parse_samples(first, second)
    assert (sample["listen_overflows"], sample["listen_drops"], sample["iowait_pct"], sample["ctxt_per_s"]) == (5, 5, 50.0, 2000)


def test_a_failed_section_does_not_hide_the_rest():
    raw = {"probe": 1, "sections": {"meta": {"rc": 0, "out": "hostname=h\ncpus=4\n"},
                                    "sysctl": {"rc": 0, "out": "net/core/somaxconn:128\n"},
                                    "nginx_T": {"rc": 124, "out": ""}, "listeners": {"rc": 0, "out": None}}}
    facts = parse(json.dumps(raw))
    assert facts["host"]["cpus"] == 4 and facts["sysctl"]["net.core.somaxconn"] == 128
    assert "listeners" in facts["errors"] and facts["listeners"] == []


def test_target_reads_known_hosts_key_and_become_from_host_vars():
    target = target_for("w", "10.0.0.5", 2222, "deploy", {
        "ansible_ssh_common_args": "-o UserKnownHostsFile=/tmp/kh -o StrictHostKeyChecking=yes",
        "ansible_ssh_private_key_file": "/tmp/key", "ansible_become": True, "opsctl_known_hosts": "/other"})
    assert (target.known_hosts, str(target.key_file), target.become, target.port) == ((Path("/tmp/kh"),), "/tmp/key", True, 2222)
    assert target_for("w", "a", 22, "u", {"opsctl_known_hosts": "/other"}).known_hosts == (Path("/other"),)
    assert [p.name for p in target_for("w", "a", 22, "u", {}).known_hosts] == ["known_hosts", "known_hosts2"]


def test_managed_init_script_signals_the_master_itself():
    # opsctl_lifecycle's script: QUIT with a bounded wait; TERM only in force-stop, later on.
    text = ("### file /etc/init.d/php8.2-fpm\n22:GRACE=10\n33:RELOAD_SIGNAL=USR2\n"
            "95:\tkill -QUIT \"$_m\" 2>/dev/null || true\n109:\tkill -TERM \"$_m\" 2>/dev/null || true\n"
            "138:\tkill -$RELOAD_SIGNAL \"$_m\"\n168:\t\t_m=$(master) && kill -USR1 \"$_m\" ;;\n")
    init = parse_init_scripts(text)["php-fpm"]
    assert (init["stop_signal"], init["stop_schedule"], init["reload_signal"]) == ("QUIT", "QUIT/10", "USR2")


def test_managed_init_script_that_reloads_through_the_signal_and_wait_rule():
    # What the probe's awk prints of the script with signal-wait.sh embedded (lines of the
    # library first, then do_reload's call).
    text = ("### file /etc/init.d/php8.2-fpm\n22:GRACE=10\n33:RELOAD_SIGNAL=USR2\n"
            "75:\tkill -0 \"$1\" 2>/dev/null || return 0\n"
            "117:# opsctl_signal_and_wait SIGNAL PIDFILE SECONDS: send SIGNAL to the master in PIDFILE and wait\n"
            "120:opsctl_signal_and_wait() {\n123:\tkill -\"$1\" \"$_osw_master\" || return 2\n"
            "150:\tkill -QUIT \"$_m\" 2>/dev/null || true\n"
            "190:\tif opsctl_signal_and_wait \"$RELOAD_SIGNAL\" \"$PIDFILE\" \"$GRACE\"; then\n")
    init = parse_init_scripts(text)["php-fpm"]
    assert (init["stop_signal"], init["stop_schedule"], init["reload_signal"]) == ("QUIT", "QUIT/10", "USR2")


def test_a_usr1_postrotate_is_a_reopen_not_a_restart():
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.probe_facts import parse_logrotate

    text = ("### file /etc/logrotate.d/nginx\npostrotate\n"
            "  [ ! -s /run/nginx.pid ] || kill -USR1 \"$(cat /run/nginx.pid)\"\nendscript\n"
            "### file /etc/logrotate.d/php8.2-fpm\npostrotate\n  /etc/init.d/php8.2-fpm restart\nendscript\n")
    flagged = parse_logrotate(text)
    assert [(f["source"], f["action"]) for f in flagged] == [("/etc/logrotate.d/php8.2-fpm", "restart")]


def run_probe_here() -> dict:
    """The probe exactly as check sends it (opsctl.probe: discover.sh, then probe.sh), on this machine."""
    from opsctl.probe import probe_script

    env = {**os.environ, "OPSCTL_PROBE_SAMPLE_CS": "0"}
    done = subprocess.run(["sh", "-s"], input=probe_script().decode(), capture_output=True, text=True, env=env,
                          timeout=60, check=True)
    return json.loads(done.stdout)


def test_probe_output_is_json_that_carries_each_read_verbatim():
    """The probe on this machine: one JSON object, and a section's text is what the command printed."""
    raw = run_probe_here()
    sections = raw["sections"]
    assert raw["probe"] == 1 and {"meta", "sysctl", "listeners", "php_fpm_tt", "nginx_T", "sample1"} <= set(sections)
    assert all(isinstance(s["rc"], int) and isinstance(s["out"], str) for s in sections.values())
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert parse(raw)["sysctl"]["net.core.somaxconn"] == somaxconn
    if shutil.which("nginx") and os.geteuid() == 0:
        direct = subprocess.run(["nginx", "-T"], capture_output=True, text=True, timeout=30)
        # nginx -T dumps every config file: quotes, backslashes (\.php$) and tabs cross the encoder
        assert sections["nginx_T"]["out"] == (direct.stdout + direct.stderr).rstrip("\n") or \
            sections["nginx_T"]["out"] == (direct.stderr + direct.stdout).rstrip("\n")


@pytest.mark.skipif(not Path("/etc/crontab").is_file(), reason="no /etc/crontab here")
def test_probe_cron_section_keeps_the_file_headers_and_entries():
    out = run_probe_here()["sections"]["cron"]["out"]
    assert "### file /etc/crontab system" in out
    entries = parse_crontabs(out)["entries"]
    assert any(e["source"] == "/etc/crontab" for e in entries)
