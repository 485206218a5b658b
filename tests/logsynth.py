"""A synthetic access log whose figures are known: opsctl_timing lines with seeded request
times, a burst of known size in one second, and the figures computed from the lines themselves
(sorted values, counted seconds) for the tests to compare `profile suggest` with."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Synthetic:
    lines: list[str]
    p50_ms: float
    p99_ms: float
    peak_1s: int
    peak_1m: int
    epochs: list[float]


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, -(-round(q * len(ordered) * 1000) // 1000)) - 1]


def line(epoch: float, rt: float, urt: float, status: int = 200) -> str:
    return timing_line(epoch, rt, status, upstream="unix:/run/php/php-fpm.sock", urt=f"{urt:.3f}", ustatus=str(status))


def local_time(epoch: float) -> str:
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(epoch))


def timing_line(epoch: float, rt: float, status: int, *, host: str = "shop.test", server: str = "_",
                upstream: str = "-", ustatus: str = "-", urt: str = "-") -> str:
    """One opsctl_timing line; the upstream fields as nginx writes them ("a, b : c" for retries)."""
    uct = uht = "-" if upstream == "-" else re.sub(r"[\d.]+", "0.000", urt)
    return (f'10.0.0.9 - - [{local_time(epoch)}] "GET /shop.php HTTP/1.1" {status} 512 "-" "synth" "-" '
            f'{epoch:.3f} {rt:.3f} "{host}" "{server}" "{upstream}" "{ustatus}" "{uct}" "{uht}" {urt}')


def synthetic(start: float, seed: int = 15, background: int = 3000, burst: int = 240) -> Synthetic:
    """BACKGROUND requests over an hour from START (whole minute), then BURST in one second
    at START + 1800.5: request times log-normal around 80 ms with a tail past a second."""
    rng = random.Random(seed)
    times = [start + rng.uniform(0, 3600) for _ in range(background)] + [start + 1800.5] * burst
    rts = [round(min(rng.lognormvariate(-2.5, 1.3), 30.0), 3) for _ in times]
    lines = [line(t, rt, max(rt - 0.001, 0)) for t, rt in sorted(zip(times, rts))]
    seconds = Counter(int(t) for t in times)
    minutes = Counter(int(t) // 60 for t in times)
    return Synthetic(lines, nearest_rank(rts, 0.5) * 1000, nearest_rank(rts, 0.99) * 1000,
                     max(seconds.values()), max(minutes.values()), sorted(times))
