"""Module opsctl.fleet.file_state: read_globs reads what the globs match, search finds text files
the way `grep -rlIs --exclude` does."""

import base64
import os

from ansible_collections.opsctl.fleet.plugins.modules import file_state

PARAMS = {"paths": [], "read": [], "globs": [], "read_globs": [], "search": [], "search_patterns": [],
          "search_exclude": [], "stat_globs": False, "backups_of": [], "diversions": False, "max_bytes": 4194304}


def run(**params):
    return file_state.read_all({**PARAMS, **params})


def test_read_globs_stats_every_match_and_reads_the_files(tmp_path):
    (tmp_path / "a.conf").write_text("a\n")
    (tmp_path / "b.conf").mkdir()
    result = run(read_globs=[f"{tmp_path}/*.conf", f"{tmp_path}/none*"])
    assert result["globs"] == {f"{tmp_path}/*.conf": [f"{tmp_path}/a.conf", f"{tmp_path}/b.conf"],
                               f"{tmp_path}/none*": []}
    files = result["files"]
    assert base64.b64decode(files[f"{tmp_path}/a.conf"]["content"]) == b"a\n"
    assert files[f"{tmp_path}/b.conf"]["type"] == "directory" and "content" not in files[f"{tmp_path}/b.conf"]


def test_search_is_grep_rlIs_with_exclude(tmp_path):
    cron = tmp_path / "cron.d"
    (cron / "sub").mkdir(parents=True)
    (cron / "php").write_text("0 4 * * * root /etc/init.d/php8.2-fpm restart\n")
    (cron / "sub/web").write_text("0 4 * * * root service nginx restart\n")
    (cron / "other").write_text("0 4 * * * root true\n")
    (cron / "php~").write_text("fpm\n")
    (cron / "php.dpkg-old").write_text("fpm\n")
    (cron / "blob").write_bytes(b"fpm\0\1")
    (cron / "latin1").write_bytes("# caf\xe9 fpm\n".encode("latin-1"))  # grep -I in a UTF-8 locale: binary
    (cron / "link").symlink_to(cron / "php")        # grep -r follows no link inside a directory
    crontab = tmp_path / "crontab"
    crontab.write_text("# nginx\n")
    result = run(search=[str(crontab), str(cron), str(tmp_path / "missing"), str(cron / "php")],
                 search_patterns=["fpm", "nginx"], search_exclude=["*~", "*.dpkg-*"])
    assert result["found"] == [str(crontab), str(cron / "php"), str(cron / "sub/web")]
    assert base64.b64decode(result["files"][str(cron / "sub/web")]["content"]).startswith(b"0 4")
    assert result["files"][str(crontab)]["mode"] == "%04o" % (os.stat(crontab).st_mode & 0o7777)


def test_nothing_asked_nothing_read():
    result = run()
    assert result["files"] == {} and result["found"] == [] and result["globs"] == {}


def test_backups_of_a_pattern_are_found_next_to_each_path_it_names_present_or_not(tmp_path):
    for version, conf in (("8.1", True), ("8.2", False)):
        folder = tmp_path / version / "fpm"
        folder.mkdir(parents=True)
        if conf:
            (folder / "php-fpm.conf").write_text("x\n")
        (folder / "php-fpm.conf.123.2026-01-02@03:04:05~").write_text("old\n")
        (folder / "php-fpm.conf.bak").write_text("not an Ansible backup\n")
    backups = run(backups_of=[f"{tmp_path}/*/fpm/php-fpm.conf"])["backups"]
    assert backups == {f"{tmp_path}/{v}/fpm/php-fpm.conf": [f"{tmp_path}/{v}/fpm/php-fpm.conf.123.2026-01-02@03:04:05~"]
                       for v in ("8.1", "8.2")}


def test_stale_files_keeps_what_differs_in_content_owner_mode_or_type(tmp_path):
    from ansible_collections.opsctl.fleet.plugins.filter.stale_files import stale_files

    (tmp_path / "same").write_text("a\n")
    (tmp_path / "other").write_text("b\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "file-not-dir").write_text("")
    for path in ("same", "other"):
        os.chmod(tmp_path / path, 0o644)
    os.chmod(tmp_path / "dir", 0o755)
    owner = {"owner": (state := run(paths=[str(tmp_path / "same")]))["files"][str(tmp_path / "same")]["owner"],
             "group": state["files"][str(tmp_path / "same")]["group"]}
    wanted = [{"dest": str(tmp_path / "same"), "content": "a\n", **owner},
              {"dest": str(tmp_path / "other"), "content": "a\n", **owner},
              {"dest": str(tmp_path / "same"), "content": "a\n", "mode": "0600", **owner},
              {"dest": str(tmp_path / "dir"), "mode": "0755", **owner},
              {"dest": str(tmp_path / "dir"), "mode": "0700", **owner},
              {"dest": str(tmp_path / "file-not-dir"), "mode": "0644", **owner},
              {"dest": str(tmp_path / "missing"), "mode": "0755", **owner}]
    state = run(paths=[w["dest"] for w in wanted])
    stale = stale_files(wanted, state)
    assert [(w["dest"].rsplit("/", 1)[-1], w["mode"]) for w in stale] == [
        ("other", "0644"), ("same", "0600"), ("dir", "0700"), ("file-not-dir", "0644"), ("missing", "0755")]
    assert stale[0]["before"]["exists"] and not stale[-1]["before"]["exists"]
