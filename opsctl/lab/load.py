"""A bounded HTTP load against lab hosts, recording every request's outcome and latency.

Threads with keep-alive connections are enough for the lab's rates (hundreds of requests per
second) and keep each outcome exact. Bounded in time and count; only for the lab's own hosts.
"""

from __future__ import annotations

import asyncio
import http.client
import statistics
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0          # 2xx
    non_2xx: int = 0
    errors: int = 0      # no HTTP answer at all (refused, reset, timeout)
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies_ms) if self.latencies_ms else 0.0


def _request(conn: http.client.HTTPConnection, path: str, body: str | None) -> int:
    if body is None:
        conn.request("GET", path)
    else:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    response = conn.getresponse()
    response.read()
    return response.status


def _one(address: str, path: str, conn: http.client.HTTPConnection | None,
         timeout: float, body: str | None = None) -> tuple[int, http.client.HTTPConnection | None]:
    """(status or 0, connection to reuse). Like browsers and urllib3, a request that fails on a
    reused keep-alive connection before any response byte is retried once on a new one: a
    server closing an idle connection (nginx does on every graceful reload) is not an error."""
    reused = conn is not None
    for attempt in (1, 2):
        conn = conn or http.client.HTTPConnection(address, 80, timeout=timeout)
        try:
            return _request(conn, path, body), conn
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            conn = None
            if not (reused and attempt == 1):
                return 0, None
        except (OSError, http.client.HTTPException):
            conn.close()
            return 0, None
    return 0, None


def _worker(address: str, path: str, deadline: float, budget: list[int], result: LoadResult,
            lock: threading.Lock, timeout: float, stop: threading.Event, order_prefix: str | None) -> None:
    conn = None
    while time.monotonic() < deadline and not stop.is_set():
        with lock:
            if budget[0] <= 0:
                break
            budget[0] -= 1
            number = budget[0]  # strictly decreasing: a unique order id per request
        body = None if order_prefix is None else f"id={order_prefix}-{threading.get_ident()}-{number}"
        started = time.monotonic()
        status, conn = _one(address, path, conn, timeout, body)
        elapsed = (time.monotonic() - started) * 1000
        with lock:
            result.sent += 1
            if status == 0:
                result.errors += 1
            elif 200 <= status < 300:
                result.ok += 1
                result.latencies_ms.append(elapsed)
            else:
                result.non_2xx += 1
    if conn is not None:
        conn.close()


def run_load(address: str, path: str, *, seconds: float, concurrency: int = 8,
             max_requests: int = 100_000, timeout: float = 10.0,
             stop: threading.Event | None = None, order_prefix: str | None = None) -> LoadResult:
    """GET `path` on `address` from `concurrency` clients until `seconds`, `max_requests` or
    `stop`; with `order_prefix`, POST a unique `id=<prefix>-...` instead (the lab's order.php)."""
    result, lock, budget = LoadResult(), threading.Lock(), [max_requests]
    deadline = time.monotonic() + min(seconds, 300)
    stop = stop or threading.Event()
    threads = [threading.Thread(target=_worker, args=(address, path, deadline, budget, result, lock, timeout, stop, order_prefix))
               for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


class BackgroundLoad:
    """run_load in a thread, for an action taken while the load runs; stop() ends it early."""

    def __init__(self, address: str, path: str, **kwargs: object) -> None:
        self.result: LoadResult | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(address, path),
                                        kwargs=dict(kwargs, stop=self._stop))

    def stop(self) -> None:
        self._stop.set()

    def _run(self, address: str, path: str, **kwargs: float) -> None:
        self.result = run_load(address, path, **kwargs)

    def __enter__(self) -> "BackgroundLoad":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()


@dataclass(frozen=True)
class Orders:
    """What order.php's ledger says about one load's orders."""
    begun: int
    committed: int
    orphaned: int  # begun and never committed: cut half way

    @classmethod
    def from_ledger(cls, text: str, prefix: str) -> "Orders":
        begun, committed = set(), set()
        for line in text.splitlines():
            word, _, order = line.partition(" ")
            if order.startswith(prefix + "-"):
                (begun if word == "begin" else committed if word == "commit" else set()).add(order)
        return cls(len(begun), len(committed), len(begun - committed))


FPM_POOL = "/etc/php/8.2/fpm/pool.d/www.conf"            # a Debian lab web host's pool
WEB_SITE = "/etc/nginx/sites-available/default"          # and its nginx site


def fpm_on_tcp(address: str, backlog: int | None = None) -> str:
    """A shell command for a Debian lab web host: its pool listens on ADDRESS (host:port), as in
    the seed (a TCP listener's overflows count in /proc/net/netstat and the connections nginx gave
    up on show as CLOSE_WAIT; a unix socket has neither), with an accept queue of BACKLOG if given,
    and nginx passes to it; nginx -t checks the site. php-fpm must then be restarted (a reload
    keeps its listener) and nginx reloaded."""
    queue = f"\\nlisten.backlog = {backlog}" if backlog else ""
    return (f"sed -i 's|^listen = .*|listen = {address}{queue}|' {FPM_POOL} && "
            f"sed -i 's|fastcgi_pass unix:[^;]*;|fastcgi_pass {address};|' {WEB_SITE} && nginx -t -q")


MAX_OUTSTANDING = 1500        # an impatient burst's open sockets, at most, whatever the server does


@dataclass
class Burst:
    """What an impatient burst's clients got."""
    attempts: int = 0
    ok: int = 0            # 200
    shed: int = 0          # 503
    other: int = 0         # other answers
    timeouts: int = 0      # the client gave up (nginx logs 499)
    errors: int = 0        # refused / reset
    seconds: float = 0.0
    ok_at: list[float] = field(default_factory=list)   # seconds into the burst of each 200

    def late_goodput(self) -> float:
        """Successes per second in the second half of the burst: the state the overload settles in."""
        half = self.seconds / 2
        return sum(1 for t in self.ok_at if t >= half) / half


async def attempt(address: str, path: str, timeout: float) -> int | str:
    """Status code of one GET on a new connection, or "timeout" / "error". The socket is closed either way."""
    writer = None
    try:
        async def go() -> int:
            nonlocal writer
            reader, writer = await asyncio.open_connection(address, 80)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n".encode())
            line = await reader.readline()
            return int(line.split()[1])
        return await asyncio.wait_for(go(), timeout)
    except asyncio.TimeoutError:
        return "timeout"
    except (OSError, ValueError, IndexError):
        return "error"
    finally:
        if writer is not None:
            writer.close()


@dataclass(frozen=True)
class Phase:
    """A stretch of a burst: new clients arrive at RATE a second for SECONDS."""
    seconds: float
    rate: float


def due(phases: list[Phase], elapsed: float) -> float:
    """How many clients PHASES have brought ELAPSED seconds after they began."""
    total, begun = 0.0, 0.0
    for phase in phases:
        total += min(max(elapsed - begun, 0.0), phase.seconds) * phase.rate
        begun += phase.seconds
    return total


async def _impatient(address: str, path: str, phases: list[Phase], timeout: float,
                     wait_out: bool) -> Burst:
    result = Burst()
    outstanding: set[asyncio.Task] = set()

    def done(task: asyncio.Task) -> None:
        outstanding.discard(task)
        if task.cancelled():   # still waiting when the burst ended: its client left
            return
        outcome = task.result()
        if outcome == 200:
            result.ok += 1
            result.ok_at.append(time.monotonic() - start)
        elif outcome == 503:
            result.shed += 1
        elif outcome == "timeout":
            result.timeouts += 1
        elif outcome == "error":
            result.errors += 1
        else:
            result.other += 1

    seconds = sum(phase.seconds for phase in phases)
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        now_due = int(due(phases, elapsed)) - result.attempts
        for _ in range(max(0, min(now_due, MAX_OUTSTANDING - len(outstanding)))):
            task = asyncio.create_task(attempt(address, path, timeout))
            task.add_done_callback(done)
            outstanding.add(task)
            result.attempts += 1
        await asyncio.sleep(0.01)
    result.seconds = time.monotonic() - start
    if not wait_out:
        for task in list(outstanding):
            task.cancel()   # the burst is over: its clients leave, their sockets close
    await asyncio.gather(*outstanding, return_exceptions=True)
    return result


def impatient_burst(address: str, path: str, *, rate: float, seconds: float, timeout: float,
                    wait_out: bool = False) -> Burst:
    """GET PATH on ADDRESS at a constant RATE of new connections for SECONDS (at most 60), each
    client giving up after TIMEOUT: as a flash sale's users do, they arrive whatever the server
    answers (a failed client is replaced at once, so the rate holds); at most MAX_OUTSTANDING
    sockets open. At the end the clients still waiting leave at once, or with WAIT_OUT wait for
    their answer or their timeout, as they would after a sale's last arrivals."""
    return asyncio.run(_impatient(address, path, [Phase(min(seconds, 60), rate)], timeout, wait_out))


def flash_sale(address: str, path: str, phases: list[Phase], *, timeout: float) -> Burst:
    """impatient_burst through PHASES one after the other (at most 300 s in all, the last ones
    cut), e.g. a quiet stretch, the rush, and the quiet after it; the last clients wait out their
    answer or their timeout."""
    bounded, left = [], 300.0
    for phase in phases:
        if left > 0:
            bounded.append(Phase(min(phase.seconds, left), phase.rate))
            left -= phase.seconds
    return asyncio.run(_impatient(address, path, bounded, timeout, wait_out=True))
