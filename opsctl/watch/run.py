"""The steps of `opsctl watch`: load the inventory, start one session per host, then either
take one rated sample of every host and print it (--once) or redraw the screen every interval
until --duration or Ctrl-C; --record writes every sample as a JSON line."""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO, Any, Callable

import click
from rich.console import Console
from rich.live import Live

from opsctl.errors import EXIT_FAILED, EXIT_OK, OpsctlError
from opsctl.vault import VaultOptions, resolve

MAX_SAMPLES = 86400      # one day at 1 s: the sampler's bound when no --duration is given


@dataclass(frozen=True)
class WatchOptions:
    inventory: str
    limit: str | None
    interval: float
    duration: float | None
    record: str | None
    once: bool
    fmt: str
    vault: VaultOptions


def _seconds(text: str, what: str, least: float) -> float:
    from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import parse_duration

    try:
        seconds = parse_duration(text).total_seconds()
    except ValueError as exc:
        raise OpsctlError(f"{what}: {exc}") from None
    if seconds < least:
        raise OpsctlError(f"{what}: at least {least:g}s, got {text}")
    return seconds


def parse_times(interval: str, duration: str | None) -> tuple[float, float | None]:
    return _seconds(interval, "--interval", 0.2), _seconds(duration, "--duration", 1) if duration else None


def run_watch(opts: WatchOptions) -> int:
    from opsctl.inventory import load_inventory
    from opsctl.sshexec import Connector, Timeouts, _say_unhonoured, _warn, known_hosts_for, targets_for
    from opsctl.watch.board import Board
    from opsctl.watch.sessions import sampler_script, start_sessions

    inv = load_inventory(opts.inventory, opts.limit, resolve(opts.vault) if opts.vault.given else opts.vault)
    if not inv.hosts:
        raise OpsctlError(f"no host in {opts.inventory}" + (f" matches --limit {opts.limit}" if opts.limit else ""))
    targets = targets_for(inv.hosts, inv.ssh)
    _say_unhonoured(targets, _warn)
    timeouts = Timeouts()
    books = known_hosts_for(targets, _warn)
    connector = Connector(timeouts, books)
    samples = 2 if opts.once else (math.ceil(opts.duration / opts.interval) + 2 if opts.duration else MAX_SAMPLES)
    events: queue.Queue = queue.Queue()
    stop = threading.Event()
    board = Board([t.name for t in targets], opts.interval)
    with ExitStack() as stack:
        record = stack.enter_context(open(opts.record, "a", encoding="utf-8")) if opts.record else None
        clock = time.monotonic()     # the sessions' ticks and the screen's redraws
        start_sessions(targets, connector, sampler_script(samples), opts.interval, events, stop, timeouts, books,
                       clock)
        stack.callback(connector.close)
        stack.callback(stop.set)
        if opts.once:
            return _once(board, events, record, opts.interval)
        _live(board, events, record, opts, inv.source, clock)
    return EXIT_OK


def _drain(board: Any, events: queue.Queue, record: IO[str] | None, until: float,
           enough: Callable[[], bool] = lambda: False) -> None:
    """Apply every event that arrives before UNTIL (time.monotonic), or until ENOUGH() says so."""
    while not enough():
        left = until - time.monotonic()
        try:
            event = events.get(timeout=max(left, 0)) if left > 0 else events.get_nowait()
        except queue.Empty:
            return
        entry = board.apply(event)
        if entry is not None and record is not None:
            record.write(json.dumps(entry) + "\n")
            record.flush()


def _once(board: Any, events: queue.Queue, record: IO[str] | None, interval: float) -> int:
    from opsctl.watch.sessions import FIRST_SAMPLE

    deadline = time.monotonic() + FIRST_SAMPLE + 3 * interval
    while not board.complete() and time.monotonic() < deadline:
        _drain(board, events, record, min(time.monotonic() + 0.2, deadline))
    for host in board.hosts.values():
        if host.samples < 2 and host.state not in ("lost", "gave-up"):
            host.state, host.error = "lost", host.error or f"no two samples within {FIRST_SAMPLE + 3 * interval:g}s"
    click.echo(json.dumps(board.snapshot(time.time()), indent=2))
    return EXIT_OK if all(h.samples >= 2 for h in board.hosts.values()) else EXIT_FAILED


def _follow_terminal(console: Console) -> None:
    """The terminal's size now: rich prefers COLUMNS and LINES when they are set, and a shell or
    tmux may have exported them at another size; a full screen must follow the real one."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        return
    if size.columns > 0 and size.lines > 0:
        console.size = (size.columns, size.lines)


def _live(board: Any, events: queue.Queue, record: IO[str] | None, opts: WatchOptions, source: str,
          clock: float) -> None:
    from opsctl.watch.sessions import epoch, next_tick
    from opsctl.watch.view import render

    console = Console()
    started = time.monotonic()
    end = started + opts.duration if opts.duration else math.inf
    title = f"opsctl watch {source}" + (f" --limit {opts.limit}" if opts.limit else "") + \
        f", every {opts.interval:g}s" + (f", recording to {opts.record}" if opts.record else "")

    def screen() -> Any:
        _follow_terminal(console)
        return render(board, time.time(), console.size.height, f"{title}  {time.strftime('%H:%M:%S')}",
                      console.size.width)

    with Live(screen(), console=console, screen=sys.stdout.isatty(), auto_refresh=False,
              redirect_stderr=False) as live:
        try:
            while time.monotonic() < end:
                # The sessions' next tick: until then nothing new is asked for.
                tick = min(next_tick(clock, opts.interval), end)
                _drain(board, events, record, tick)
                # Redraw once every answering host has sent the sample this tick asked for (they
                # arrive together, the last within a few hundred ms on 100 hosts), and at the
                # latest just before the next tick: a slow host does not hold the screen back.
                asked = epoch(tick)
                _drain(board, events, record, tick + 0.9 * opts.interval, lambda: board.refreshed(asked))
                board.tick_fleet(time.time())
                live.update(screen(), refresh=True)
        except KeyboardInterrupt:   # Ctrl-C is how a watch ends: not an error
            pass
