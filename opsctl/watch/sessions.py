"""One persistent SSH session per host for `opsctl watch`: the sampler (sampler.sh, after
discover.sh) runs as one long-lived command, and every interval the session sends it one line
and reads one JSON line back. No new connection per sample.

A host that stops answering is shown lost after two intervals without a sample (board.py). Its
session, on a closed connection or no line within max(two intervals, 6 s), says so and
reconnects in the background: backoff doubling from one interval up to 30 s, at most RETRIES
attempts in a row, then it gives up and says so.

Sessions only move lines: every line goes, with its time of arrival, to one queue that the
watch loop (opsctl/watch/run.py) reads; parsing and figures are opsctl/watch/figures.py's.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import paramiko

from opsctl.paths import roles_dir
from opsctl.sshexec import Connector, Target, Timeouts, _become, _classify, remote_command

RETRIES = 20             # reconnect attempts in a row before a session gives up
BACKOFF_MAX = 30.0       # seconds between two attempts, at most
SLOW_SAMPLE = 6.0        # seconds a sample may take before the session reconnects
FIRST_SAMPLE = 30.0      # seconds for the first line: discovery runs nginx -T and php-fpm -tt once


def sampler_script(max_samples: int) -> bytes:
    """discover.sh (the masters, found as the probe finds them) and the sampler, bounded."""
    from importlib.resources import files

    head = f"OPSCTL_WATCH_MAX={int(max_samples)}\n".encode()
    discover = (roles_dir() / "opsctl_preflight" / "files" / "discover.sh").read_bytes()
    return head + discover + b"\n" + files("opsctl.watch").joinpath("sampler.sh").read_bytes()


def next_tick(clock: float, interval: float) -> float:
    """The next tick (time.monotonic) of the clock started at CLOCK, skipping ticks already past:
    when every session asks for a sample, and after which the screen is redrawn."""
    ticks = max(int((time.monotonic() - clock) / interval) + 1, 1)
    return clock + ticks * interval


def epoch(moment: float) -> float:
    """A time.monotonic moment (a tick) as epoch seconds, as events and records give times."""
    return time.time() - (time.monotonic() - moment)


@dataclass(frozen=True)
class Event:
    """What a session tells the watch loop: a sample line, or a change of state."""
    host: str
    at: float                   # epoch seconds at arrival
    line: str = ""              # a sample line (kind "sample")
    kind: str = "sample"        # sample | connecting | lost | gave-up | ended
    error: str = ""
    due: float | None = None    # a sample: the tick that asked for it (epoch s); None for a session's first


class LineReader:
    """Lines from a channel, each within a deadline (paramiko gives bytes, not lines)."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self.channel = channel
        self.buffer = bytearray()

    def line(self, deadline: float) -> str:
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no sample in time")
            self.channel.settimeout(left)
            try:
                chunk = self.channel.recv(65536)
            except TimeoutError:      # socket.timeout is TimeoutError
                raise TimeoutError("no sample in time") from None
            if not chunk:
                raise EOFError("the sampler ended (connection closed)")
            self.buffer += chunk
            if len(self.buffer) > 4 * 1024 * 1024:
                raise paramiko.SSHException("a sample line over 4 MB")
        line, _, rest = bytes(self.buffer).partition(b"\n")
        self.buffer = bytearray(rest)
        return line.decode(errors="replace")


class Session(threading.Thread):
    """The sampler on one host, its samples paced by a clock shared by every session."""

    def __init__(self, target: Target, connector: Connector, script: bytes, interval: float,
                 start: float, events: queue.Queue, stop: threading.Event, timeouts: Timeouts,
                 books: dict | None = None) -> None:
        super().__init__(name=f"watch-{target.name}", daemon=True)
        self.target, self.connector, self.script = target, connector, script
        self.books = books            # known_hosts as read once for the run (a reconnect reuses them)
        self.own: Connector | None = None
        self.interval, self.start_at, self.events, self.stop = interval, start, events, stop
        self.timeouts = timeouts
        self.failures = 0

    def say(self, kind: str, line: str = "", error: str = "", due: float | None = None) -> None:
        self.events.put(Event(self.target.name, time.time(), line, kind, error, due))

    def run(self) -> None:
        if self.target.problem:
            self.say("gave-up", error=self.target.problem)
            return
        while not self.stop.is_set():
            self.say("connecting")
            try:
                self._stream()
                if self.stop.is_set():
                    break
                error = "the sampler ended"
            except Exception as exc:   # any failure is this host's, shown on its row
                error = "no sample within two intervals" if isinstance(exc, TimeoutError) else (
                    str(exc) if isinstance(exc, EOFError) else _classify(exc, self.target.endpoint, self.timeouts))
            if self.stop.is_set():
                break
            self.failures += 1
            if self.failures > RETRIES:
                self.say("gave-up", error=f"{error}; gave up after {RETRIES} reconnect attempts")
                return
            self.say("lost", error=error)
            self.stop.wait(min(BACKOFF_MAX, self.interval * 2 ** (self.failures - 1)))
        self.say("ended")
        if self.own is not None:
            self.own.close()

    def _next_tick(self) -> float:
        return next_tick(self.start_at, self.interval)

    def _stream(self) -> None:
        """Connect, start the sampler, then one line per tick until stop; raises when the host
        stops answering. Connection and channel are closed on the way out, whatever happened."""
        client = self._connector().open(self.target.endpoint, self.target.secrets.password)
        try:
            transport = client.get_transport()
            assert transport is not None
            # Keepalives make a dead peer (a host that vanished without a FIN) an error soon.
            transport.set_keepalive(max(int(self.interval), 1))
            channel = transport.open_session(timeout=self.timeouts.connect)
            command, marker = remote_command(self.target, "sh -s")
            channel.exec_command(command)
            if marker:
                _become(channel, self.target, marker, time.monotonic() + self.timeouts.host)
            # stderr joins stdout (a line that is not a sample is skipped): nothing unread can
            # fill the channel's window and stall the sampler.
            channel.set_combine_stderr(True)
            channel.sendall(self.script)
            reader = LineReader(channel)
            self._deliver(reader, time.monotonic() + FIRST_SAMPLE)
            while not self.stop.is_set():
                tick = self._next_tick()
                if self.stop.wait(max(tick - time.monotonic(), 0)):
                    break
                channel.sendall(b"\n")
                # The screen shows the host lost after two intervals without a sample (board.py);
                # the session gives a slow sample (a status page that takes its 2 s timeout)
                # longer before it drops a working connection.
                self._deliver(reader, time.monotonic() + max(2 * self.interval, SLOW_SAMPLE), epoch(tick))
            channel.shutdown_write()     # the sampler reads EOF and exits
        finally:
            client.close()

    def _connector(self) -> Connector:
        """The run's shared Connector, or after a failure behind a jump host, one of this
        session's own: the shared one keeps its jump connection for the run, and a jump host
        that went away would stay gone for every reconnect."""
        if self.failures == 0 or not self.target.endpoint.via:
            return self.connector
        if self.own is not None:
            self.own.close()
        self.own = Connector(self.timeouts, self.books)
        return self.own

    def _deliver(self, reader: LineReader, deadline: float, due: float | None = None) -> None:
        """Read until one sample line (skipping other output) and hand it over, with the tick
        (epoch s) that asked for it."""
        while True:
            line = reader.line(deadline)
            if line.startswith('{"watch":'):
                self.failures = 0
                self.say("sample", line, due=due)
                return
            if line.strip():
                self.say("noise", error=line.strip()[:200])


def start_sessions(targets: list[Target], connector: Connector, script: bytes, interval: float,
                   events: queue.Queue, stop: threading.Event, timeouts: Timeouts,
                   books: dict | None = None, start: float | None = None) -> list[Session]:
    """One session per target, ticking on the clock started at START (time.monotonic; now)."""
    start = time.monotonic() if start is None else start
    sessions = [Session(t, connector, script, interval, start, events, stop, timeouts, books) for t in targets]
    for session in sessions:
        session.start()
    return sessions
