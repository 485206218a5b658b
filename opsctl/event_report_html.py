"""`opsctl report` as one self-contained HTML page: findings first, then plots (plotly; its
JavaScript inline once, so the page opens with no network), then the tables the Markdown has.

Every figure comes from the result dict event_report.build made; nothing is counted again here.
Host names, vhosts, upstream addresses and errors come from the hosts' logs: every one is
HTML-escaped in the page and in plot labels (plotly reads a subset of HTML in labels), and the
figures' JSON inside <script> is plotly's, which writes <, > and / as \\u escapes.
"""

from __future__ import annotations

import html
from typing import Any, Iterable

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from opsctl.event_report_view import (EVENT_COLUMNS, EVENT_MINUTE_COLUMNS, LATENCY, NO_EVENTS, RECORD_COLUMNS,
                                      columns, event_minutes, event_totals, events_read, figure_cells,
                                      record_cells, requests_read, window_text)
from opsctl.safetext import visible

WORST_HOSTS = 8     # hosts with a plot of their own; every host is in the tables
FINDINGS_SHOWN = 20  # findings listed open at the top (the fleet's, then the worst hosts'); the rest one click away
FAILED = ("499", "502", "503", "504")
COLOURS = {"2xx": "#59a14f", "3xx": "#a0cbe8", "499": "#f28e2b", "502": "#b07aa1", "503": "#edc948",
           "504": "#e15759", "other": "#bab0ac"}
EVENT_COLOURS = ("#e15759", "#f28e2b", "#b07aa1", "#edc948", "#76b7b2", "#4e79a7", "#9c755f", "#ff9da7", "#bab0ac")
LATENCY_COLOURS = {"p50": "#4e79a7", "p90": "#76b7b2", "p99": "#f28e2b", "max": "#e15759"}
CONFIG = {"displaylogo": False, "responsive": True}
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1280px; padding: 1em 2em; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.findings { background: #fff6e5; border-left: 4px solid #f28e2b; padding: .5em 1em; }
.findings li { margin: .2em 0; }
.plot { height: 640px; margin: 1em 0; } .plot.record { height: 560px; } .plot.events { height: 360px; }
table { border-collapse: collapse; margin: .5em 0 1em; font-variant-numeric: tabular-nums; }
.table { overflow-x: auto; }
th, td { padding: 2px 8px; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; white-space: normal; vertical-align: bottom; min-width: 3em; } td:first-child, th:first-child { text-align: left; }
tr:nth-child(even) td { background: #fafafa; } .bad { color: #b03020; font-weight: 600; }
details { margin: .5em 0; } summary { cursor: pointer; color: #345; }
.note { color: #666; }
"""


def _e(value: Any) -> str:
    """Text from a host or the inventory, shown as itself in HTML or a plot label."""
    return html.escape(visible(value))


def _label(value: Any) -> str:
    """Text from a host in a plot's title, legend or hover: plotly reads tags and entities
    there, not attributes, so quotes stay as they are."""
    return html.escape(visible(value), quote=False)


def failed_share(group: dict[str, Any]) -> float:
    """The share of GROUP's requests that ended in 499 or 5xx from nginx (502, 503, 504), in %."""
    return 100 * sum(group["status"][c] for c in FAILED) / group["requests"] if group["requests"] else 0.0


def _share(row: dict[str, Any], cls: str) -> float | None:
    """CLS's share of ROW's requests in %: the result's own where it has one (499, 504)."""
    if cls in row["share_pct"]:
        return row["share_pct"][cls]
    return 100 * row["status"][cls] / row["requests"] if row["requests"] else None


def _x(rows: list[dict[str, Any]]) -> list[str]:
    return [m["minute"][:16].replace("T", " ") for m in rows]


def _minute_ticks(fig: go.Figure, minutes: int) -> None:
    """A tick a minute on a short window (plotly would put one every 30 s); HH:MM in hovers."""
    fig.update_xaxes(hoverformat="%H:%M UTC", **({"dtick": 60_000, "tickformat": "%H:%M"} if minutes <= 20 else {}))


def timeline_figure(title: str, group: dict[str, Any], classes: list[str]) -> go.Figure:
    """Requests per minute by status class (stacked), the failed classes' share of them, and
    the upstream response time percentiles (log axis), on one time axis."""
    rows = group["minutes"]
    x = _x(rows)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.4, 0.25, 0.35],
                        subplot_titles=("requests per minute by status", "share of requests (%)",
                                        "upstream response time (ms, log scale)"))
    for cls in classes:
        fig.add_trace(go.Bar(x=x, y=[m["status"][cls] for m in rows], name=cls, legendgroup=cls,
                             marker_color=COLOURS.get(cls)), row=1, col=1)
    for cls in FAILED:
        share = [_share(m, cls) for m in rows]
        fig.add_trace(go.Scatter(x=x, y=share, name=f"{cls} %", legendgroup=cls, showlegend=False, mode="lines+markers",
                                 line_color=COLOURS[cls], hovertemplate=f"{cls}: %{{y:.1f}}%<extra></extra>"),
                      row=2, col=1)
    for q in LATENCY:
        fig.add_trace(go.Scatter(x=x, y=[m["upstream_ms"][q] for m in rows], name=f"upstream {q}", mode="lines+markers",
                                 line_color=LATENCY_COLOURS[q], hovertemplate=f"{q}: %{{y}} ms<extra></extra>"),
                      row=3, col=1)
    fig.update_layout(title=title, barmode="stack", bargap=0.1, template="plotly_white", hovermode="x unified",
                      margin={"l": 60, "r": 20, "t": 70, "b": 40})
    _minute_ticks(fig, len(rows))
    fig.update_yaxes(rangemode="tozero", row=2, col=1)
    if any(m["upstream_ms"]["max"] for m in rows):   # a log axis of no data draws stray ticks
        fig.update_yaxes(type="log", dtick="D2", tickformat="~s", row=3, col=1)   # 50, 100, 200, 500, 1k
    return fig


def _record_hosts(record: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The WORST_HOSTS hosts whose accept queue came nearest its limit, then overflowed most."""
    def worst(host: str) -> tuple[float, float]:
        rows = record[host]
        fill = max(((m["queue_max"] or 0) / (m["queue_limit"] or 1) for m in rows), default=0)
        return fill, max((m["overflows_ps_max"] or 0 for m in rows), default=0)
    return sorted(record, key=worst, reverse=True)[:WORST_HOSTS]


def record_figure(record: dict[str, list[dict[str, Any]]]) -> go.Figure:
    hosts = _record_hosts(record)
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("accept queue depth, deepest listener", "listen overflows per second",
                                        "CLOSE_WAIT sockets"))
    for i, host in enumerate(hosts):
        rows, name = record[host], _label(host)
        colour = f"hsl({i * 360 // max(len(hosts), 1)}, 60%, 45%)"
        for row, key in enumerate(("queue_max", "overflows_ps_max", "close_wait_max"), 1):
            fig.add_trace(go.Scatter(x=_x(rows), y=[m[key] for m in rows], name=name, legendgroup=name,
                                     showlegend=row == 1, mode="lines+markers", line_color=colour,
                                     customdata=[m["queue_limit"] for m in rows] if row == 1 else None,
                                     hovertemplate="%{fullData.name}: %{y}" + (" of %{customdata}" if row == 1 else "")
                                     + "<extra></extra>"), row=row, col=1)
    shown = f"{len(hosts)} of {len(record)} host(s)" if len(record) > len(hosts) else f"{len(hosts)} host(s)"
    fig.update_layout(title=f"opsctl watch record per minute ({shown}, worst first)", template="plotly_white",
                      hovermode="x unified", margin={"l": 60, "r": 20, "t": 70, "b": 40})
    _minute_ticks(fig, max((len(record[h]) for h in hosts), default=0))
    fig.update_yaxes(rangemode="tozero")
    return fig


def _plot(fig: go.Figure, div_id: str, css: str = "plot") -> str:
    div = fig.to_html(full_html=False, include_plotlyjs=False, config=CONFIG, div_id=div_id)
    return f'<div class="{css}">{div}</div>'


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """Cells are HTML already (escaped by the caller)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="table"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _failed_at(classes: list[str]) -> int:
    """Where the share of 499 and 5xx (what the hosts are ranked by) goes: after 504 %."""
    return columns("", classes).index("504 %") + 1


def _header(first: str, classes: list[str]) -> list[str]:
    """The Markdown's columns, and the share of 499 and 5xx after 504 %."""
    names, at = columns(first, classes), _failed_at(classes)
    return [*names[:at], "499+5xx %", *names[at:]]


def _cells(label: str, figures: dict[str, Any], classes: list[str]) -> list[str]:
    failed = failed_share(figures)
    cells, at = [_e(c) for c in figure_cells(figures, classes)], _failed_at(classes) - 1   # after the label
    share = (f'<span class="bad">{failed:.1f}</span>' if failed >= 1 else f"{failed:.1f}") if figures["requests"] else "-"
    return [_e(label), *cells[:at], share, *cells[at:]]


def _minutes_table(group: dict[str, Any], classes: list[str]) -> str:
    rows = [_cells(m["minute"][11:16], m, classes) for m in group["minutes"]]
    return _table(_header("minute (UTC)", classes), [*rows, _cells("all", group, classes)])


def _totals(title: str, groups: dict[str, dict[str, Any]], first: str, classes: list[str]) -> str:
    if not groups:
        return ""
    return f"<h2>{title}</h2>" + _table(_header(first, classes), (_cells(n, g, classes) for n, g in groups.items()))


def _record_table(record: dict[str, list[dict[str, Any]]]) -> str:
    return _table(RECORD_COLUMNS, ([_e(c) for c in record_cells(host, m)] for host, minutes in record.items() for m in minutes))


def events_figure(found: dict[str, Any], minutes: list[dict[str, Any]]) -> go.Figure:
    """The error-log events per minute fleet-wide, stacked by kind (the kinds in the order the
    report lists them), on the access-log plots' MINUTES and any other minute with an event."""
    by_minute = {m["minute"]: m["counts"] for m in found["minutes"]}
    rows = sorted({m["minute"]: m for m in [*minutes, *found["minutes"]]}.values(), key=lambda m: m["epoch"])
    fig = go.Figure()
    for i, (kind, label) in enumerate(found["kinds"].items()):
        counts = [by_minute.get(m["minute"], {}).get(kind, 0) for m in rows]
        if any(counts):
            fig.add_trace(go.Bar(x=_x(rows), y=counts, name=_label(label),
                                 marker_color=EVENT_COLOURS[i % len(EVENT_COLOURS)]))
    fig.update_layout(title="error-log events per minute, every host", barmode="stack", bargap=0.1,
                      template="plotly_white", hovermode="x unified", margin={"l": 60, "r": 20, "t": 70, "b": 40})
    _minute_ticks(fig, len(rows))
    return fig


def _events(found: dict[str, Any], minutes: list[dict[str, Any]]) -> list[str]:
    """The events plot, each host x kind x subject's total, and every minute's rows a click away."""
    note = f'<p class="note">{_e(events_read(found))}</p>'
    if not found["totals"]:
        return ["<h2>Error-log events</h2>", f"<p>{NO_EVENTS}</p>", note]

    def escaped(rows: list[list[str]]) -> list[list[str]]:
        return [[_e(c) for c in row] for row in rows]
    return ["<h2>Error-log events</h2>", _plot(events_figure(found, minutes), "plot-events", "plot events"),
            _table(EVENT_COLUMNS, escaped(event_totals(found))),
            "<details><summary>every minute's events, table</summary>",
            _table(EVENT_MINUTE_COLUMNS, escaped(event_minutes(found))), "</details>", note]


def _intro(result: dict[str, Any]) -> str:
    return (f"<p>{_e(window_text(result))}: {_e(requests_read(result))}. "
            "499: the client gave up; 502, 503, 504: nginx answered for the upstream (504: it gave up waiting). "
            "Upstream times are every attempt's.</p>")


def ranked(findings: list[str], subjects: list[str]) -> list[str]:
    """FINDINGS with the fleet's first, then each host's in the order of SUBJECTS (most 499
    and 5xx first), at 500 hosts the ones to read; the rest as they came."""
    rank = {subject: i for i, subject in enumerate(subjects)}
    return sorted(findings, key=lambda f: rank.get(f.split(": ", 1)[0], len(rank)))


def _findings(findings: list[str]) -> str:
    def items(some: list[str]) -> str:
        return '<ul class="findings">' + "".join(f"<li>{_e(f)}</li>" for f in some) + "</ul>"
    out = items(findings[:FINDINGS_SHOWN])
    rest = findings[FINDINGS_SHOWN:]
    return out + (f"<details><summary>{len(rest)} more findings</summary>{items(rest)}</details>" if rest else "")


def page(result: dict[str, Any]) -> str:
    """The whole report as one HTML document."""
    classes = result["classes"]
    fleet = result["fleet"].get("fleet")
    hosts = result["hosts"]
    worst = sorted(hosts, key=lambda h: failed_share(hosts[h]), reverse=True)
    plotted = worst[:WORST_HOSTS] if len(hosts) > 1 else []
    parts = [f"<h1>opsctl report: {_e(result['inventory'])}</h1>", _intro(result), "<h2>Findings</h2>",
             _findings(ranked(result["findings"], ["fleet", *worst]) or ["no failures in the window"])]
    if fleet:
        parts += ["<h2>Fleet per minute</h2>", _plot(timeline_figure("fleet", fleet, classes), "plot-fleet"),
                  "<details><summary>fleet per minute, table</summary>", _minutes_table(fleet, classes), "</details>"]
    if "record" in result and result["record"]:
        parts += ["<h2>opsctl watch record</h2>", _plot(record_figure(result["record"]), "plot-record", "plot record"),
                  "<details><summary>every host's minutes, table</summary>", _record_table(result["record"]),
                  "</details>"]
    if "events" in result:
        parts += _events(result["events"], fleet["minutes"] if fleet else [])
    if plotted:
        more = f" of {len(hosts)}; every host is in the table below" if len(hosts) > len(plotted) else ""
        parts += [f"<h2>The hosts with the most 499 and 5xx ({len(plotted)}{more})</h2>"]
        for i, host in enumerate(plotted):
            title = f"{_label(host)}: {failed_share(hosts[host]):.1f}% of {hosts[host]['requests']} requests ended in 499 or 5xx"
            parts += [_plot(timeline_figure(title, hosts[host], classes), f"plot-host-{i}"),
                      f"<details><summary>{_e(host)} per minute, table</summary>",
                      _minutes_table(hosts[host], classes), "</details>"]
    parts += [_totals("Per host (most 499 and 5xx first)", {h: hosts[h] for h in worst}, "host", classes),
              _totals("Per vhost", result["vhosts"], "vhost", classes),
              _totals("Per upstream", result["upstreams"], "upstream", classes)]
    failed = [r for r in result["read"] if not r["ok"]]
    if failed:
        parts += ["<h2>Hosts not read</h2>", _table(["host", "error"], ([_e(r["host"]), _e(r["error"])] for r in failed))]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>opsctl report: {_e(result['inventory'])}</title><style>{STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
