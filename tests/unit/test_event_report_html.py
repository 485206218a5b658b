"""`opsctl report --format html`: the page from the figures of the synthetic logs (the host
script run here as a host runs it) opens in headless Chromium with no console error and draws
its plots; text from the hosts' logs is escaped (a vhost named `</script>...` runs nothing); at
many hosts only the worst have plots of their own; and the browser check fails a broken page."""

from __future__ import annotations

import html
import json
import re

import pytest

from opsctl import event_report
from opsctl.event_record import read_record
from opsctl.event_report_html import FINDINGS_SHOWN, WORST_HOSTS, failed_share
from opsctl.host_logs import HostFigures
from tests import browser
from tests.unit.test_event_report import OPTS, START, host_run, made, timing_log

HOSTILE_VHOST = "</script><script>window.pwned = 1</script>"
HOSTILE_HOST = '</script><img src=x onerror="window.pwned = 1">'
# After load: the plots plotly drew, their traces, the bars and lines drawn with a size, and
# whether any hostile text ran.
PROBE = """({
  plots: document.querySelectorAll('.js-plotly-plot').length,
  traces: [...document.querySelectorAll('.js-plotly-plot')].reduce((n, d) => n + d.data.length, 0),
  bars: [...document.querySelectorAll('.js-plotly-plot .barlayer .point path')]
        .filter(p => p.getBoundingClientRect().height > 0).length,
  lines: [...document.querySelectorAll('.js-plotly-plot .scatterlayer .js-line')]
         .filter(p => p.getBoundingClientRect().width > 0).length,
  pwned: window.pwned === 1,
})"""


def _sample(host: str, at: float, queue: int, overflows: float, close_wait: int) -> str:
    return json.dumps({"host": host, "time": at, "due": at, "figures": {
        "listeners": [{"kind": "nginx", "address": "0.0.0.0:80", "queue": queue, "limit": 511}],
        "overflows_ps": overflows, "close_wait": close_wait}})


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two hosts read from the synthetic log, a third whose name and vhost are hostile, a
    fourth not read; an `opsctl watch --record` of two hosts filling their accept queues."""
    tmp = tmp_path_factory.mktemp("html")
    lines, _expected = timing_log(seed=11, per_minute=200)
    half = len(lines) // 2
    hostile = made([[START + 60 * i, HOSTILE_VHOST, "10.0.1.11:9000", cls, n]
                    for i in range(5) for cls, n in (("2xx", 50), ("499", 10 * i))])
    # its error log: nginx marked a hostile upstream failed, for a hostile vhost
    hostile["events"] = {"rows": [[START + 60, "upstream_disabled", HOSTILE_HOST, HOSTILE_VHOST, 3],
                                  [START + 120, "upstream_timed_out", "10.0.1.11:9000", HOSTILE_VHOST, 7]],
                         "lines": 10, "in_window": 10, "unreadable": 0, "files": [], "errors": []}
    figures = [HostFigures("web1", True, data=host_run(lines[:half], tmp, name="a.log")),
               HostFigures("web2", True, data=host_run(lines[half:], tmp, name="b.log")),
               HostFigures(HOSTILE_HOST, True, data=hostile),
               HostFigures("web4", False, error=f"unreachable: {HOSTILE_HOST}")]
    record = tmp / "watch.jsonl"
    record.write_text("\n".join(_sample(host, START + 20 * i, q, max(0, q - 400) / 10, 5 + i)
                                for host, peak in (("web1", 511), (HOSTILE_HOST, 200))
                                for i, q in enumerate(min(peak, 40 * i * i) for i in range(15))))
    result = event_report.build(figures, OPTS, "lab", read_record(str(record), OPTS.since, OPTS.until))
    text = event_report.render(result, "html")
    path = tmp / "report.html"
    path.write_text(text)
    return result, text, path


def test_log_text_is_escaped_and_cannot_leave_its_script(report):
    result, text, _path = report
    # plotly.js once, then one script per plot: nothing a host wrote opened or closed another
    plots = 1 + 1 + 1 + min(WORST_HOSTS, len(result["hosts"]))   # fleet, record, events, hosts
    assert text.count("<script") == text.count("</script>") == 1 + plots
    assert text[text.index("<body>"):].count("Plotly.newPlot(") == plots
    assert HOSTILE_VHOST not in text and "<img src=x" not in text
    assert "<td>&lt;/script&gt;&lt;script&gt;window.pwned = 1&lt;/script&gt;</td>" in text   # tables
    assert "<td>&lt;/script&gt;&lt;img src=x onerror=&quot;window.pwned = 1&quot;&gt;</td>" in text
    # a plot label: its < > & escaped for plotly (which reads tags in labels); in its JSON, / is \u002f
    assert '"name":"&lt;\\u002fscript&gt;&lt;img src=x onerror=\\"window.pwned = 1\\"&gt;"' in text


def test_error_log_events_are_plotted_and_listed(report):
    result, text, _path = report
    events = text[text.index("<h2>Error-log events</h2>"):]
    kinds = result["events"]["kinds"]
    assert 'id="plot-events"' in events
    host = html.escape(HOSTILE_HOST)
    for kind, subject, count in (("upstream_disabled", host, 3), ("upstream_timed_out", "10.0.1.11:9000", 7)):
        assert f"<tr><td>{host}</td><td>{html.escape(kinds[kind])}</td><td>{subject}</td><td>{count}</td>" in events
    assert "10 line(s) read, 0 unreadable" in events


def test_findings_come_first_and_every_host_is_in_a_table(report):
    result, text, _path = report
    body = text[text.index("<body>"):]
    assert body.index("<h2>Findings</h2>") < body.index("Plotly.newPlot(")
    for finding in result["findings"]:
        assert f"<li>{html.escape(finding)}</li>" in text
    per_host = text[text.index("<h2>Per host"):text.index("<h2>Per vhost")]
    # most 499 and 5xx first: the hostile host's 100 of 350, then the synthetic ones' (about 17%)
    order = sorted(result["hosts"], key=lambda h: failed_share(result["hosts"][h]), reverse=True)
    assert order[0] == HOSTILE_HOST and failed_share(result["hosts"][HOSTILE_HOST]) == 100 * 100 / 350
    assert re.findall(r"<tr><td>([^<]*)</td>", per_host) == [html.escape(h) for h in order]


def test_many_hosts_plot_only_the_worst(report):
    names = [f"web{i:03}" for i in range(40)]
    figures = [HostFigures(name, True, data=made([[START, "shop.test", "-", "2xx", 100], [START, "shop.test", "-", "504", i]]))
               for i, name in enumerate(names)]
    result = event_report.build(figures, OPTS, "big")
    text = event_report.render(result, "html")
    plotted = re.findall(r"<details><summary>(web\d+) per minute", text)
    assert plotted == names[::-1][:WORST_HOSTS]
    assert all(f"<td>{name}</td>" in text for name in names)
    # the fleet's finding open first, then the worst hosts', the rest one click away: the
    # fleet's and web002-web039's 504 (web001's 1 of 101 is under 1%), 39 findings
    assert len(result["findings"]) == 39
    top, rest = (re.findall(r"<li>(.*?)</li>", ul) for ul in re.findall(r'<ul class="findings">(.*?)</ul>', text))
    assert top[0].startswith("fleet: ") and [f.split(":")[0] for f in top[1:]] == names[::-1][:FINDINGS_SHOWN - 1]
    assert sorted(top + rest) == sorted(result["findings"]) and len(rest) == 39 - FINDINGS_SHOWN
    assert f"<details><summary>{len(rest)} more findings</summary>" in text


@pytest.fixture(scope="module")
def chrome():
    with browser.Chromium() as chromium:
        yield chromium


def test_the_page_renders_in_headless_chromium_with_its_plots(report, chrome):
    result, _text, path = report
    loaded = chrome.load(path, PROBE)
    (path.parent / "report.png").write_bytes(loaded.png)
    assert loaded.errors == []
    found = loaded.found
    assert found["plots"] == 3 + min(WORST_HOSTS, len(result["hosts"])) and not found["pwned"], found
    # per plot of a group: 7 status bars + 4 share lines + 4 latency lines; the record: 3 a host;
    # the events: a bar a kind seen
    assert found["traces"] == 15 * (1 + 3) + 3 * 2 + 2, found
    assert found["bars"] >= 5 * 7 and found["lines"] >= 3 * 4, found
    assert loaded.png.startswith(b"\x89PNG") and len(loaded.png) > 50_000


def test_the_browser_check_fails_a_broken_page(report, chrome, tmp_path):
    """Negative control: the same report with plotly.js not inline but a file that is not
    there (as a page that needs the network would be), and a console.error of its own."""
    _result, text, _path = report
    start = text.index("<script>", text.index("<head>"))
    end = text.index("</script>", start) + len("</script>")
    broken = (text[:start] + '<script src="plotly-not-here.min.js"></script>'
              + '<script>console.error("deliberate")</script>' + text[end:])
    path = tmp_path / "broken.html"
    path.write_text(broken)
    loaded = chrome.load(path, PROBE, settle=0)
    assert loaded.found["plots"] == 0
    assert "deliberate" in loaded.errors
    assert any("Plotly is not defined" in e for e in loaded.errors), loaded.errors
    assert any("ERR_FILE_NOT_FOUND" in e for e in loaded.errors), loaded.errors
