"""A bounded HTTP load against lab hosts, recording every request's outcome and latency.

Threads with keep-alive connections are enough for the lab's rates (hundreds of requests per
second) and keep each outcome exact. Bounded in time and count; only for the lab's own hosts.
"""

from __future__ import annotations

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
