"""Cron lines that restart php-fpm or nginx the hard way: found, rewritten graceful, reverted."""

import pytest

from ansible_collections.opsctl.fleet.plugins.filter import lifecycle_cron as cron

RELOAD = {"php-fpm": "/etc/init.d/php8.2-fpm reload", "nginx": "/etc/init.d/nginx reload"}


def one(line: str, policy: str = "reload"):
    return cron.scan_line("/etc/cron.d/x", 1, line, RELOAD, policy)


@pytest.mark.parametrize("line, new", [
    ("28 5 * * * root /etc/init.d/php-fpm restart",
     "28 5 * * * root /etc/init.d/php8.2-fpm reload"),
    ("28 5 * * * /etc/init.d/php8.2-fpm restart >/dev/null 2>&1",
     "28 5 * * * /etc/init.d/php8.2-fpm reload >/dev/null 2>&1"),
    ("0 3 * * * root service php8.2-fpm restart", "0 3 * * * root /etc/init.d/php8.2-fpm reload"),
    ("0 3 * * * root sudo invoke-rc.d nginx restart", "0 3 * * * root sudo /etc/init.d/nginx reload"),
    ("@daily systemctl restart php8.2-fpm.service", "@daily /etc/init.d/php8.2-fpm reload"),
    ("0 4 * * * root systemctl --quiet try-restart nginx && echo ok", "0 4 * * * root /etc/init.d/nginx reload && echo ok"),
    ("0 4 * * * root killall -9 php-fpm8.2; /etc/init.d/php8.2-fpm start",
     "0 4 * * * root /etc/init.d/php8.2-fpm reload; /etc/init.d/php8.2-fpm start"),
    ("0 4 * * * root pkill nginx", "0 4 * * * root /etc/init.d/nginx reload"),
    ("0 4 * * * root kill -TERM $(cat /run/php/php8.2-fpm.pid)", "0 4 * * * root /etc/init.d/php8.2-fpm reload"),
    ("0 4 * * * root kill `cat /run/nginx.pid`", "0 4 * * * root /etc/init.d/nginx reload"),
    ("0 4 * * * root kill -s KILL $(pidof php-fpm8.2)", "0 4 * * * root /etc/init.d/php8.2-fpm reload"),
    ("0 4 * * * root /etc/init.d/php8.2-fpm stop; sleep 5; /etc/init.d/php8.2-fpm start",
     "0 4 * * * root /etc/init.d/php8.2-fpm reload; sleep 5; /etc/init.d/php8.2-fpm start"),
    ("/etc/init.d/php8.2-fpm restart", "/etc/init.d/php8.2-fpm reload"),  # a cron.daily script line
])
def test_hard_restarts_become_the_graceful_reload_and_keep_the_rest_of_the_line(line, new):
    finding = one(line)
    assert finding is not None and finding.action == "replaced", finding
    assert finding.new == new


@pytest.mark.parametrize("line", [
    "28 5 * * * root /etc/init.d/php8.2-fpm reload",
    "28 5 * * * root /etc/init.d/nginx rotate",
    "0 * * * * root kill -USR1 $(cat /run/php/php8.2-fpm.pid)",
    "0 * * * * root kill -s HUP $(cat /run/nginx.pid)",
    "0 * * * * root pkill -USR2 php-fpm8.2",
    "# 28 5 * * * root /etc/init.d/php-fpm restart",
    "MAILTO=ops@example.com",
    "0 1 * * * root /usr/local/bin/backup --restart-db",
    "0 1 * * * root systemctl restart mysql",
    "0 1 * * * root /etc/init.d/php-fpm-exporter restart",
    "09,39 * * * * root [ -x /usr/lib/php/sessionclean ] && /usr/lib/php/sessionclean",
    "0 1 * * * root kill -9 $(cat /run/redis.pid)",
])
def test_graceful_or_unrelated_lines_are_not_findings(line):
    assert one(line) is None


@pytest.mark.parametrize("line", ["0 2 * * 0 root /etc/init.d/nginx stop",
                                  "0 * * * * root kill -QUIT `cat /run/nginx.pid`"])   # a graceful stop is a stop
def test_a_lone_stop_is_kept_and_reported(line):
    finding = one(line)
    assert finding.action == "kept" and finding.new is None and finding.service == "nginx"


def test_policies_comment_and_report():
    assert one("28 5 * * * root /etc/init.d/php-fpm restart", "comment").action == "disabled"
    assert one("28 5 * * * root /etc/init.d/php-fpm restart", "report").action == "reported"
    with pytest.raises(ValueError, match="policy"):
        cron.rewrite("/etc/crontab", "", RELOAD, "yolo")


def test_no_reload_command_for_an_absent_service_means_report_only():
    finding = cron.scan_line("/etc/crontab", 1, "0 1 * * * root /etc/init.d/nginx restart", {"php-fpm": "x"}, "reload")
    assert finding.action == "reported" and finding.new is None


CRONTAB = """SHELL=/bin/sh
# m h dom mon dow user command
17 * * * * root cd / && run-parts --report /etc/cron.hourly
28 5 * * * root /etc/init.d/php8.2-fpm restart >/dev/null 2>&1
30 5 * * * root /usr/local/bin/report
0 6 * * * root killall php-fpm8.2
"""


def test_rewrite_touches_only_hard_lines_marks_them_and_is_idempotent():
    first = cron.rewrite("/etc/crontab", CRONTAB, RELOAD, "reload")
    assert first.changed and [f.line for f in first.findings] == [4, 6]
    lines = first.content.split("\n")
    assert lines[:3] == CRONTAB.split("\n")[:3]
    assert lines[3] == cron.MARK_REPLACED + "28 5 * * * root /etc/init.d/php8.2-fpm restart >/dev/null 2>&1"
    assert lines[4] == "28 5 * * * root /etc/init.d/php8.2-fpm reload >/dev/null 2>&1"
    assert lines[5] == "30 5 * * * root /usr/local/bin/report"
    assert lines[7] == "0 6 * * * root /etc/init.d/php8.2-fpm reload"
    assert first.content.endswith("\n")
    second = cron.rewrite("/etc/crontab", first.content, RELOAD, "reload")
    assert not second.findings and second.content == first.content


@pytest.mark.parametrize("policy", ["reload", "comment"])
def test_revert_restores_the_file_byte_for_byte(policy):
    changed = cron.rewrite("/etc/crontab", CRONTAB, RELOAD, policy)
    assert changed.content != CRONTAB
    restored = cron.revert("/etc/crontab", changed.content)
    assert restored.content == CRONTAB
    assert not cron.revert("/etc/crontab", CRONTAB).findings


def test_filters_return_only_files_with_findings():
    files = [{"path": "/etc/crontab", "content": CRONTAB}, {"path": "/etc/cron.d/other", "content": "0 1 * * * root true\n"}]
    out = cron.cron_rewrite(files, RELOAD, "reload")
    assert [f["path"] for f in out] == ["/etc/crontab"] and out[0]["changed"]
    assert {f["action"] for f in out[0]["findings"]} == {"replaced"}
    back = cron.cron_revert([{"path": "/etc/crontab", "content": out[0]["content"]}])
    assert back[0]["content"] == CRONTAB and back[0]["changed"]


def test_a_line_naming_one_of_several_masters_reloads_that_one():
    # A RHEL host with Remi's PHP beside the base one: each line keeps the service it names.
    reload = {"php-fpm": "systemctl reload php-fpm", "php74-php-fpm": "systemctl reload php74-php-fpm"}
    lines = {"0 4 * * * root systemctl restart php74-php-fpm.service": "systemctl reload php74-php-fpm",
             "0 4 * * * root systemctl restart php-fpm": "systemctl reload php-fpm",
             "0 4 * * * root killall php-fpm": "systemctl reload php-fpm"}
    for line, command in lines.items():
        assert cron.scan_line("/etc/cron.d/x", 1, line, reload, "reload").new == "0 4 * * * root " + command, line
