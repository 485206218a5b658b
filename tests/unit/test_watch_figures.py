"""opsctl watch's pure parts: a sampler line parsed, rates from counters, thresholds, the
worst-first order, sparklines, fleet totals; and the real sampler run on this machine."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from opsctl.watch import figures as fg
from opsctl.watch.board import Board
from opsctl.watch.sessions import Event, sampler_script


def line(seq: int = 1, up: float = 100.0, ticks: int = 10, cpu=(1000, 10), tcp=(0, 0), listen=None, cw=None,
         fpm=None, log=None) -> str:
    data = {"watch": 1, "seq": seq, "up": up, "hz": 100, "ticks": ticks, "cpu": list(cpu), "load": 0.5,
            "mem": [1000, 250], "tcp": list(tcp),
            "listen": listen if listen is not None else [["nginx", "0.0.0.0:80", 0, 511],
                                                         ["php-fpm", "/run/php/php8.2-fpm.sock", 0, 511]],
            "cw": cw, "fpm": fpm or [],
            "log": log or {"files": 1, "new": 0, "read": 0, "lines": 0, "s": {}, "urt": None}}
    return json.dumps(data)


def raw(**kwargs) -> fg.Raw:
    return fg.parse_line(line(**kwargs))


def test_a_sample_line_is_parsed_into_listeners_pools_and_log_counts():
    r = raw(listen=[["nginx", "0.0.0.0:80", 3, 511]], cw=4,
            fpm=[["www", "127.0.0.1:9001", 1, 5, 3, 0, 511, 2, 1], ["api", "127.0.0.1:9101", 0] + [None] * 6],
            log={"files": 1, "new": 300, "read": 300, "lines": 3, "s": {"200": 2, "499": 1}, "urt": {"18": 2}})
    assert r.listeners == (fg.Listener("nginx", "0.0.0.0:80", 3, 511),)
    assert r.close_wait == 4
    assert r.pools[0] == fg.Pool("www", "127.0.0.1:9001", True, 5, 3, 0, 511, 2, 1)
    assert r.pools[1].ok is False and r.pools[1].active is None
    assert r.statuses == {"200": 2, "499": 1} and r.urt == {18: 2}


@pytest.mark.parametrize("text", ["", "sudo: lecture", "{}", '{"watch": 2}', "[1, 2]"])
def test_anything_but_a_sample_line_is_refused(text):
    with pytest.raises(ValueError):
        fg.parse_line(text)


def test_rates_come_from_counter_deltas_over_the_hosts_own_clock():
    before = raw(seq=1, up=100.0, ticks=10, cpu=(1000, 10), tcp=(50, 60))
    after = raw(seq=2, up=102.0, ticks=14, cpu=(1400, 110), tcp=(70, 64),
                log={"files": 1, "new": 900, "read": 900, "lines": 10,
                     "s": {"200": 7, "204": 1, "499": 1, "502": 1}, "urt": {10: 5, 30: 5}})
    fig = fg.figures("web1", 0.0, after, before)
    assert fig.overflows_ps == 10.0 and fig.drops_ps == 2.0
    assert fig.rps == 5.0
    assert fig.share("2xx") == 0.8 and fig.share("499") == 0.1 and fig.share_5xx == 0.1
    assert fig.iowait_pct == 25.0
    assert fig.cpu_ms == 40.0            # 4 ticks of 1/100 s in one sample
    assert fig.mem_used_pct == 75.0
    assert fig.p50_ms == pytest.approx(fg.URT_STEP ** 10.5 - 1, abs=0.1)
    assert fig.p99_ms == pytest.approx(fg.URT_STEP ** 30.5 - 1, abs=0.1)


def test_the_first_sample_has_levels_but_no_rates():
    fig = fg.figures("web1", 0.0, raw(listen=[["nginx", "0.0.0.0:80", 7, 10]]))
    assert fig.rps is None and fig.overflows_ps is None and fig.iowait_pct is None and fig.cpu_ms is None
    assert fig.queue_ratio == 0.7


def test_a_counter_that_went_down_is_a_reset_not_a_negative_rate():
    fig = fg.figures("web1", 0.0, raw(seq=2, up=101, tcp=(0, 0)), raw(seq=1, up=100, tcp=(500, 500)))
    assert fig.overflows_ps == 0.0


def test_a_log_cut_at_the_cap_is_scaled_to_what_it_grew_by():
    log = {"files": 1, "new": 4000, "read": 1000, "lines": 10, "s": {"200": 9, "499": 1}, "urt": None}
    fig = fg.figures("web1", 0.0, raw(seq=2, up=101, log=log), raw(seq=1, up=100))
    assert fig.rps == 40.0 and fig.share("499") == 0.1 and fig.p50_ms is None


def test_pool_counters_become_per_interval_deltas():
    before = raw(seq=1, up=100, fpm=[["www", "/s", 1, 1, 4, 0, 511, 3, 10]])
    after = raw(seq=2, up=101, fpm=[["www", "/s", 1, 5, 0, 2, 511, 5, 11]])
    fig = fg.figures("web1", 0.0, after, before)
    assert (fig.fpm_active, fig.fpm_idle, fig.fpm_listen_queue) == (5, 0, 2)
    assert fig.fpm_max_children == 2 and fig.fpm_slow == 1
    assert fg.alerts(fig)["fpm"] == "bad"


def test_a_host_without_a_status_page_shows_no_pool_figures():
    fig = fg.figures("web1", 0.0, raw(seq=2, up=101), raw(seq=1, up=100))
    assert fig.fpm_active is None and fig.fpm_max_children is None and "fpm" not in fg.alerts(fig)


@pytest.mark.parametrize("kwargs, name", [
    ({"listen": [["php-fpm", "/s", 300, 511]]}, "queue"),
    ({"tcp": (1, 0)}, "overflows"),
    ({"tcp": (0, 1)}, "overflows"),
    ({"log": {"files": 1, "new": 1, "read": 1, "lines": 100, "s": {"200": 98, "499": 2}, "urt": None}}, "499"),
    ({"log": {"files": 1, "new": 1, "read": 1, "lines": 100, "s": {"200": 98, "504": 2}, "urt": None}}, "5xx"),
])
def test_each_threshold_marks_its_figure_bad(kwargs, name):
    fig = fg.figures("web1", 0.0, raw(seq=2, up=101, **kwargs), raw(seq=1, up=100))
    assert fg.alerts(fig) == {name: "bad"}


def test_thresholds_are_not_crossed_at_their_limit():
    log = {"files": 1, "new": 1, "read": 1, "lines": 100, "s": {"200": 99, "499": 1}, "urt": None}
    fig = fg.figures("web1", 0.0, raw(seq=2, up=101, log=log, listen=[["nginx", "a", 5, 10]]), raw(seq=1, up=100))
    assert fg.alerts(fig) == {}       # exactly half the queue, exactly 1% of 499s


def test_close_wait_is_growing_only_when_it_rose_at_every_recent_sample():
    assert fg.growing([1, 2, 3, 4])
    assert not fg.growing([1, 2, 2, 4])
    assert not fg.growing([2, 3, 4])             # too short to say
    assert not fg.growing([None, 2, 3, 4])
    assert not fg.growing([4, 3, 2, 1])


def test_hosts_are_ordered_worst_first_lost_on_top_ties_by_name():
    calm = fg.figures("a", 0.0, raw(seq=2, up=101), raw(seq=1, up=100))
    full = fg.figures("b", 0.0, raw(seq=2, up=101, listen=[["nginx", "x", 9, 10]]), raw(seq=1, up=100))
    worse = fg.figures("c", 0.0, raw(seq=2, up=101, listen=[["nginx", "x", 9, 10]], tcp=(5, 0)), raw(seq=1, up=100))
    order = fg.worst_first([("a", calm, False), ("b", full, False), ("z", None, True), ("c", worse, False),
                            ("d", calm, False)])
    assert [name for name, _, _ in order] == ["z", "c", "b", "a", "d"]


def test_sparkline_scales_to_the_largest_value_and_bins_a_minute():
    assert fg.sparkline([0, 1, 2, 4]) == "▁▃▅█"
    assert fg.sparkline([0, 0, 0]) == "▁▁▁"
    assert fg.sparkline([None, 4]) == " █"
    assert fg.sparkline([0.0, 0.5, 1.0, 2.0], top=1.0) == "▁▅██"     # a share of a limit: absolute
    assert fg.sparkline([]) == ""
    binned = fg.sparkline([0] * 50 + [9] + [0] * 9, width=6)
    assert len(binned) == 6 and binned == "▁▁▁▁▁█"      # a one-sample spike survives the binning


def test_fleet_totals_sum_rates_weigh_shares_by_requests_and_skip_lost_hosts():
    def host(name, lines, statuses, urt, ovf):
        log = {"files": 1, "new": 1, "read": 1, "lines": lines, "s": statuses, "urt": urt}
        return fg.figures(name, 0.0, raw(seq=2, up=101, log=log, tcp=(ovf, 0)), raw(seq=1, up=100))
    latest = {"web1": host("web1", 90, {"200": 90}, {10: 90}, 0),
              "web2": host("web2", 10, {"499": 10}, {40: 10}, 3),
              "web3": host("web3", 1000, {"502": 1000}, {50: 1000}, 7),
              "web4": None}
    total = fg.fleet(latest, lost=["web3"])
    assert (total.hosts, total.answering, total.lost) == (4, 2, 1)
    assert total.rps == 100.0
    assert total.share("2xx") == 0.9 and total.share("499") == 0.1
    assert total.overflows_ps == 3.0
    assert total.p50_ms == pytest.approx(fg.URT_STEP ** 10.5 - 1, abs=0.1)
    assert total.p99_ms == pytest.approx(fg.URT_STEP ** 40.5 - 1, abs=0.1)


def test_the_board_marks_a_silent_host_lost_after_two_intervals():
    board = Board(["web1", "web2"], interval=1.0)
    for seq, at in ((1, 10.0), (2, 11.0)):
        board.apply(Event("web1", at, line(seq=seq, up=100 + seq)))
        board.apply(Event("web2", at, line(seq=seq, up=100 + seq)))
    assert board.complete() and not board.lost("web2", 12.0)
    board.apply(Event("web1", 12.0, line(seq=3, up=103)))
    assert board.lost("web2", 13.6) and not board.lost("web1", 13.6)
    assert [h.name for h in board.ordered(13.6)] == ["web2", "web1"]
    record = board.apply(Event("web2", 14.0, kind="lost", error="refused: nothing accepts SSH"))
    assert record == {"host": "web2", "time": 14.0, "state": "lost", "error": "refused: nothing accepts SSH"}
    # After a reconnect, rates start afresh: no rate across two sampler runs.
    entry = board.apply(Event("web2", 15.0, line(seq=0, up=105, tcp=(999, 0))))
    assert entry["figures"]["overflows_ps"] is None and not board.lost("web2", 15.0)


def run_sampler(bound: int, requests: int) -> tuple[list[str], int]:
    """The sampler as a session runs it: `sh -s`, the script on stdin; after its first line,
    one line per sample asked; then stdin closed. Its lines and exit status."""
    proc = subprocess.Popen(["sh", "-s"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(sampler_script(bound))
    proc.stdin.flush()
    lines = [proc.stdout.readline().decode()]
    for _ in range(requests):
        # Paced, as watch paces it (0.2 s at the shortest): /proc/uptime counts in 10 ms steps,
        # and two samples within one step have no interval to rate.
        time.sleep(0.05)
        try:
            proc.stdin.write(b"\n")
            proc.stdin.flush()
        except BrokenPipeError:    # the sampler reached its bound and is gone
            break
        got = proc.stdout.readline().decode()
        if not got:
            break
        lines.append(got)
    try:
        proc.stdin.close()
    except BrokenPipeError:        # the last line asked for was never read: the sampler is gone
        pass
    lines += proc.stdout.read().decode().splitlines()
    return [text.strip() for text in lines if text.strip()], proc.wait(timeout=30)


def test_the_real_sampler_answers_one_line_per_request_and_exits_at_eof():
    lines, status = run_sampler(10, 2)
    assert status == 0 and len(lines) == 3
    first, last = (fg.parse_line(text) for text in (lines[0], lines[-1]))
    assert (first.seq, last.seq) == (0, 2) and last.uptime >= first.uptime and last.hz > 0
    assert fg.figures("here", 0.0, last, first).cpu_ms is not None


def test_the_sampler_stops_at_its_bound_whatever_it_is_sent():
    lines, status = run_sampler(2, 10)
    assert len(lines) == 2 and status == 0


def test_the_screen_of_100_hosts_fits_the_terminal_worst_first_with_a_count_of_the_rest():
    from rich.console import Console

    from opsctl.watch.view import render

    names = [f"web{i}" for i in range(1, 101)]
    board = Board(names, interval=1.0)
    for seq in (1, 2):
        for i, name in enumerate(names):
            queue = 400 if name == "web42" else 3
            board.apply(Event(name, 100.0 + seq, line(seq=seq, up=100 + seq, listen=[["nginx", "0.0.0.0:80", queue, 511]])))
        board.tick_fleet(100.0 + seq)
    board.apply(Event("web77", 102.5, kind="lost", error="refused: nothing accepts SSH on root@10.0.0.77:22"))
    console = Console(width=100, height=30, record=True, force_terminal=False)
    console.print(render(board, 102.5, 30, "opsctl watch", 100))
    screen = console.export_text().splitlines()
    assert len(screen) <= 30 and max(len(text) for text in screen) <= 100
    rows = [text.split()[0] for text in screen if text.startswith(" web")]
    assert rows[:2] == ["web77", "web42"]                       # lost first, then the full queue
    assert any("LOST" in text for text in screen)
    assert any("web77: refused: nothing accepts SSH" in text for text in screen)
    assert any(f"and {100 - len(rows)} more hosts" in text for text in screen)
    assert screen[1].startswith("fleet: 99/100 hosts answer")


NGINX_T = """#!/bin/sh
cat <<'X'
# configuration file /etc/nginx/nginx.conf:
http {
	log_format timed '$remote_addr - $remote_user [$time_local] "$request" '
	                 '$status $body_bytes_sent "$http_referer" "$http_user_agent" '
	                 '$request_time $upstream_response_time $pipe';
	log_format quoted '$remote_addr "$upstream_response_time" "$http_user_agent"';
	access_log LOG timed buffer=32k;
	access_log QUOTED quoted;
	access_log off;
}
X
"""


def test_the_sampler_reads_only_new_log_lines_and_finds_upstream_time_from_the_log_format(tmp_path):
    """The sampler's own shell functions, with nginx -T from a stand-in binary: only the lines
    written since the last sample count; $upstream_response_time is found by its place from the
    end of the line in the log_format, and a format with a quoted field after it has none."""
    log, quoted, nginx = tmp_path / "timed.log", tmp_path / "quoted.log", tmp_path / "nginx"
    nginx.write_text(NGINX_T.replace("LOG", str(log)).replace("QUOTED", str(quoted)))
    nginx.chmod(0o755)
    old = '1.2.3.4 - - [06/Dec/2026:03:00:00 +0000] "GET /old HTTP/1.1" 200 1 "-" "curl/8" 0.1 0.100 .\n'
    log.write_text(old * 5)
    new = ('1.2.3.4 - - [06/Dec/2026:03:00:01 +0000] "GET /a HTTP/1.1" 200 12 "-" "curl/8 (x)" 0.1 0.012 .\n'
           '1.2.3.4 - - [06/Dec/2026:03:00:01 +0000] "GET /a HTTP/1.1" 499 0 "-" "curl" 0.1 - .\n'
           '1.2.3.4 - - [06/Dec/2026:03:00:01 +0000] "-" 400 0 "-" "-" 0.000 - .\n'
           '1.2.3.4 - - [06/Dec/2026:03:00:01 +0000] "POST /b HTTP/1.1" 502 0 "-" "curl" 1.0 0.500, 1.000 .\n')
    script = sampler_script(10).decode().rstrip("\n").rsplit("\n", 1)[0] + f"""
FOUND="nginx running 1 {nginx} - - unit=- scripts=- pidfile=-"
LOGS=$(access_logs); POOLS=""; SEQ=0
printf '%s\\n' "$LOGS" >&2
read_owners
sample
printf '%s' '{new}' >> {log}
SEQ=1
sleep 0.05   # /proc/uptime counts in 10 ms steps: two samples within one have no interval to rate
sample
"""
    proc = subprocess.run(["sh", "-s"], input=script.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.decode().split("\n")[:2] == [f"{log} 1", f"{quoted} -1"]
    first, second = (fg.parse_line(text) for text in proc.stdout.decode().splitlines())
    assert first.log_lines == 0 and first.log_files == 1        # what was there before is not new (quoted.log: absent)
    assert second.log_lines == 4 and second.log_new == len(new)
    assert second.statuses == {"200": 1, "499": 1, "400": 1, "502": 1}
    assert sum(second.urt.values()) == 2                        # 0.012 and 1.000 (the last upstream's)
    fig = fg.figures("web1", 0.0, second, first)
    assert fig.p50_ms == pytest.approx(12, rel=0.1) and fig.p99_ms == pytest.approx(1000, rel=0.1)


SS_STUB = """#!/bin/sh
# ss with one state asked for: today's leaves out the State column (STATE empty), older ones print it
p() {{ if [ "$1" = -p ]; then echo " users:((\\"$2\\",pid=10,fd=6))"; fi; }}
echo "tcp {state} 3 511 0.0.0.0:80 0.0.0.0:*$(p "$1" nginx)"
echo "u_str {state} 7 4096 /run/php/php8.2-fpm.sock 1234 * 0$(p "$1" php-fpm8.2)"
echo "tcp {state} 0 128 0.0.0.0:22 0.0.0.0:*$(p "$1" sshd)"
"""


@pytest.mark.parametrize("state", ["", "LISTEN"])
def test_the_sampler_reads_listeners_whether_ss_prints_the_state_column_or_not(tmp_path, state):
    ss = tmp_path / "ss"
    ss.write_text(SS_STUB.format(state=state))
    ss.chmod(0o755)
    script = sampler_script(10).decode().rstrip("\n").rsplit("\n", 1)[0] + f"""
LISTENING={ss}; FOUND=""; LOGS=""; POOLS=""; SEQ=0
read_owners
sample
"""
    proc = subprocess.run(["sh", "-s"], input=script.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    raw = fg.parse_line(proc.stdout.decode().strip())
    assert raw.listeners == (fg.Listener("nginx", "0.0.0.0:80", 3, 511),
                             fg.Listener("php-fpm", "/run/php/php8.2-fpm.sock", 7, 4096))
    assert raw.close_wait is None      # php-fpm on a unix socket: no CLOSE_WAIT to count


def test_a_sample_is_recorded_with_the_tick_that_asked_for_it():
    board = Board(["web1"], interval=1.0)
    assert board.apply(Event("web1", 10.02, line(seq=0, up=100)))["due"] is None   # a session's first: no tick
    assert board.apply(Event("web1", 11.03, line(seq=1, up=101), due=11.0))["due"] == 11.0


def test_the_screen_waits_for_every_answering_host_of_a_refresh_not_for_a_lost_one():
    board = Board(["web1", "web2", "web3"], interval=1.0)
    for name in ("web1", "web2"):
        board.apply(Event(name, 10.0, line(seq=0, up=100)))
    assert board.refreshed(9.5)                          # web3 still connecting: not waited for
    board.apply(Event("web1", 11.02, line(seq=1, up=101), due=11.0))
    assert not board.refreshed(10.5)                     # web2's sample of this tick is still to come
    board.apply(Event("web2", 11.03, line(seq=1, up=101), due=11.0))
    assert board.refreshed(10.5)
    board.apply(Event("web2", 11.5, kind="lost", error="the sampler ended"))
    board.apply(Event("web1", 12.02, line(seq=2, up=102), due=12.0))
    assert board.refreshed(11.6)                         # a lost host holds nothing back
