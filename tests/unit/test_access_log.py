"""The access-log reader (plugins/plugin_utils/access_log.py) on lines real nginx wrote.

tests/unit/data/access_log/ holds what a lab balancer's nginx 1.22 wrote for the same 19
requests in five formats at once: opsctl_timing (the file the opsctl_nginx role installs,
included as is), combined, RHEL's main, nginx's documented `upstream_time` (key=value) and a
`main` with `$request_time $upstream_response_time` appended. The requests: static files, a
query string and a referer with one, an upstream whose first server refuses (retried: "a, b"),
one whose servers all refuse (502), an internal redirect to another upstream ("a : b"), a 504
(read timeout), a 499 (the client gave up), a POST, a 404, quotes, tabs, UTF-8 and spaces in
the path and user agent, a TLS hello and junk on the plain port (400), HTTP/1.0 and 0.9. The
lab-*.log files are a hardened lab's own lb and web logs around the switch (combined, then
opsctl_timing), the web host's 499s included.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ansible_collections.opsctl.fleet.plugins.plugin_utils import access_log as al

DATA = Path(__file__).parent / "data" / "access_log"
MAIN_RT = ('$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" '
           '"$http_user_agent" $request_time $upstream_response_time')


def lines(name: str) -> list[str]:
    return (DATA / f"{name}.log").read_text().splitlines()


def read(name: str, *formats: al.LogFormat) -> tuple[list[al.Entry], al.Reader]:
    reader = al.Reader(formats)
    entries = [reader.parse(line) for line in lines(name)]
    assert None not in entries and reader.unreadable == 0, [l for l, e in zip(lines(name), entries) if e is None]
    return entries, reader


def by_path(entries: list[al.Entry], path: str) -> list[al.Entry]:
    return [e for e in entries if e.path == path]


# --- opsctl_timing -----------------------------------------------------------------------------------

def test_every_field_of_a_proxied_request():
    entries, _ = read("opsctl_timing")
    web = by_path(entries, "/web/health.php")[0]
    assert (web.method, web.status, web.body_bytes, web.server) == ("POST", 200, 28, "scratch.test")
    assert web.host == "127.0.0.1"           # $host: the Host header without its port
    assert web.upstream_addr == ("10.213.121.21:80",) and web.upstream_status == (200,)
    assert all(len(t) == 1 and t[0] is not None for t in
               (web.upstream_connect_time, web.upstream_header_time, web.upstream_response_time))
    assert web.request_time is not None and web.time is not None and web.time % 1 != 0   # milliseconds


def test_a_retried_upstream_gives_one_value_per_attempt():
    retried = by_path(read("opsctl_timing")[0], "/retry/health.php")
    first = next(e for e in retried if len(e.upstream_addr) == 2)
    assert first.upstream_addr == ("127.0.0.1:1", "10.213.121.21:80")
    assert first.upstream_status == (502, 200) and first.status == 200
    assert first.upstream_connect_time[0] is None and first.upstream_connect_time[1] is not None   # refused: "-"
    assert len(first.upstream_response_time) == 2
    # Round robin: the next request went straight to the live server.
    assert any(e.upstream_addr == ("10.213.121.21:80",) for e in retried)


def test_every_server_refused_and_an_internal_redirect():
    entries, _ = read("opsctl_timing")
    down = by_path(entries, "/down/x")[0]
    assert down.status == 502 and down.upstream_status == (502, 502)
    assert down.upstream_header_time == (None, None)
    colon = by_path(entries, "/colon/health.php")[0]
    # "refused : 10.213.121.21:80": the first upstream had no live server (nginx writes its name),
    # error_page sent the request on to a second one.
    assert colon.upstream_addr == ("refused", "10.213.121.21:80") and colon.upstream_status == (502, 404)
    assert colon.status == 404


def test_504_and_499_keep_what_nginx_knew():
    entries, _ = read("opsctl_timing")
    timeout = next(e for e in entries if e.status == 504)
    assert timeout.upstream_status == (504,) and timeout.upstream_header_time == (None,)   # no header came
    assert timeout.request_time >= 1.0   # the scratch server's proxy_read_timeout 1s
    gave_up = next(e for e in entries if e.status == 499)
    assert gave_up.upstream_status == (None,) and gave_up.upstream_header_time == (None,)
    assert gave_up.request_time < 1.0    # curl --max-time 0.3 (give or take a loaded machine)


def test_a_request_without_upstream_has_empty_lists_not_unknown_ones():
    static = by_path(read("opsctl_timing")[0], "/static")[0]
    assert static.upstream_addr == () and static.upstream_response_time == () and static.upstream_status == ()


def test_query_strings_never_reach_the_file_nor_the_entries():
    text = (DATA / "opsctl_timing.log").read_text()
    assert "someone@example.com" not in text and "s3cr3t" not in text and "ms=" not in text
    assert '"http://shop.example/cart"' in text    # the referer up to its "?"
    assert "someone@example.com" in (DATA / "combined.log").read_text()   # the stock format logs it
    assert all("?" not in (e.path or "") for e in read("combined")[0])


def test_what_is_no_request_is_a_400_without_method_or_path():
    bad = [e for e in read("opsctl_timing")[0] if e.status == 400]
    assert len(bad) == 3
    assert [(e.method, e.path) for e in bad] == [(None, None), (None, None), ("GET", "/a")]


def test_paths_stay_as_the_client_sent_them_escaped_as_nginx_wrote_them():
    paths = {e.path for e in read("opsctl_timing")[0]}
    assert "/static/a%20b/%22q%22/caf%C3%A9/../x" in paths       # not decoded, not normalised
    assert "/static/\\x22q\\x22" in paths and "/static/caf\\xC3\\xA9" in paths


def test_the_time_is_the_milliseconds_of_the_same_second_time_local_shows():
    for line, entry in zip(lines("opsctl_timing"), read("opsctl_timing")[0]):
        stamp = line[line.index("[") + 1:line.index("]")]
        assert int(entry.time) == int(al._clf_time(stamp))


# --- the same requests in the other formats ---------------------------------------------------------

def test_combined_and_main_give_what_they_log_and_none_of_the_rest():
    timing = read("opsctl_timing")[0]
    for name in ("combined", "main"):
        entries = read(name)[0]
        assert [(e.status, e.method, e.path, e.body_bytes, int(e.time)) for e in entries] == \
               [(e.status, e.method, e.path, e.body_bytes, int(e.time)) for e in timing], name
        assert all(e.request_time is None and e.upstream_addr is None and e.upstream_response_time is None
                   and e.host is None and e.server is None for e in entries)


def test_key_value_upstream_times_are_read_without_the_definition():
    timing, kv = read("opsctl_timing")[0], read("upstream_time")[0]
    for a, b in zip(timing, kv):
        assert (b.upstream_connect_time, b.upstream_header_time) == (a.upstream_connect_time, a.upstream_header_time)
        assert b.request_time == a.request_time and b.upstream_addr is None and b.upstream_status is None
    assert sum(1 for e in kv if len(e.upstream_response_time) == 2) == 3   # the retries and the redirect


def test_any_variant_is_read_by_its_definition():
    # Unkeyed fields cannot be guessed: with its log_format (from nginx -T) they can.
    guessed = read("main_rt")[0]
    assert all(e.request_time is None for e in guessed)
    entries, _ = read("main_rt", al.LogFormat(MAIN_RT))
    timing = read("opsctl_timing")[0]
    assert [e.upstream_response_time for e in entries] == [e.upstream_response_time for e in timing]
    assert [e.request_time for e in entries] == [e.request_time for e in timing]


def test_a_file_switched_on_the_day_reads_both_formats():
    for host in ("lab-lb1", "lab-web1"):
        entries, reader = read(host)
        assert reader.lines == 6 and [e.upstream_addr is None for e in entries] == [True] * 3 + [False] * 3
    web = read("lab-web1")[0]
    assert [e.status for e in web[3:]] == [499, 499, 200]
    assert web[3].upstream_addr == ("unix:/run/php/php8.2-fpm.sock",) and web[3].host == "web1"


def test_a_format_in_time_iso8601_braces_and_escape_json():
    fmt = al.LogFormat('{"t":"$time_iso8601","s":${status},"rt":"$request_time","u":"$request_uri",'
                       '"ua":"$upstream_addr","urt":"$upstream_response_time"}')
    entry = fmt.parse('{"t":"2026-12-06T14:14:39+08:00","s":200,"rt":"0.012","u":"/a\\"b?x=1",'
                      '"ua":"10.0.0.1:80, 10.0.0.2:80","urt":"0.001, 0.011"}')
    assert entry is not None and entry.time == al._clf_time("06/Dec/2026:06:14:39 +0000")
    assert (entry.status, entry.request_time, entry.path) == (200, 0.012, '/a\\"b')
    assert entry.upstream_addr == ("10.0.0.1:80", "10.0.0.2:80") and entry.upstream_response_time == (0.001, 0.011)
    assert entry.upstream_status is None


# --- garbage ------------------------------------------------------------------------------------------

def test_garbage_is_counted_never_raised():
    good, combined = lines("opsctl_timing")[2], lines("combined")[2]
    junk = ["", "\n", "hello", good[:60], good[:good.index(" HTTP")], "x" * 1_000_000, "\x00\xff" * 50,
            combined.replace("Dec", "Foo"), combined.replace("06:34:02", "99:99:99"), good.replace(" 200 ", " 2000 "),
            good.replace('[', '')]
    reader = al.Reader()
    assert [reader.parse(line) for line in junk] == [None] * len(junk)
    assert (reader.lines, reader.unreadable) == (len(junk), len(junk))


def test_mutated_real_lines_never_raise():
    rng = random.Random(15)
    real = [line for name in ("opsctl_timing", "combined", "upstream_time") for line in lines(name)]
    reader = al.Reader([al.LogFormat(MAIN_RT)])
    for _ in range(3000):
        chars = list(rng.choice(real))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(chars))
            chars[at:at + rng.randint(0, 3)] = rng.choice(["", '"', " ", "-", ",", ":", "9", "\\", "?", "[", "]"])
        reader.parse("".join(chars))
    assert reader.lines == 3000 and 0 < reader.unreadable < 3000


def test_a_line_cut_short_or_mangled_after_combined_reads_as_far_as_combined_goes():
    good = lines("opsctl_timing")[2]
    for line in (good[:good.index(" 1796")], good.replace('"502, 200"', '"502, abc"')):
        entry = al.Reader().parse(line)
        assert entry.status == 200 and entry.path == "/retry/health.php" and entry.upstream_addr is None


def test_entries_skips_what_it_cannot_read():
    reader = al.Reader()
    got = list(reader.entries(lines("opsctl_timing")[:3] + ["junk"]))
    assert len(got) == 3 and reader.unreadable == 1


# --- one definition ------------------------------------------------------------------------------------

def test_the_format_the_role_writes_is_the_one_the_reader_compiles():
    conf = Path(__file__).resolve().parents[2] / "ansible_collections/opsctl/fleet/roles/opsctl_nginx/templates"
    template = (conf / "opsctl-log-format.conf.j2").read_text()
    assert "opsctl_nginx__log_format.lines" in template and "'{{ piece }}'" in template
    assert al.opsctl_timing().definition == "".join(al.OPSCTL_TIMING)
    # Tools that count fields from the end (opsctl watch's sampler) find the response time last.
    assert al.OPSCTL_TIMING[-1] == "$upstream_response_time"
