"""What `opsctl watch` shows, computed from the sampler's lines (opsctl/watch/sampler.sh). Pure:
no I/O, no clock; every function takes what it needs, so the tests feed it lines.

A sample line carries counters as the host has them (ListenOverflows, the CPU's jiffies, the
access log's new lines, php-fpm's max children reached); a figure is a rate or a share over the
interval between two samples of one host, so the first sample of a host shows levels only.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Iterable, Mapping, Sequence

URT_STEP = 1.15          # the sampler's histogram: bucket b holds times t (ms) with log(t+1)/log(1.15) in [b, b+1)
SHARE_CODES = ("499", "502", "503", "504")

# Thresholds: a figure past one is drawn red (bad) or yellow (warn), and counts for the order.
QUEUE_RATIO_BAD = 0.5    # an accept queue above half its limit: the next burst overflows it
SHARE_499_BAD = 0.01     # clients giving up: more than 1% of requests
SHARE_5XX_BAD = 0.01     # 502/503/504 together
IOWAIT_WARN = 20.0       # percent of CPU time
CLOSE_WAIT_RISE = 3      # samples over which a rising CLOSE_WAIT count is "growing"


@dataclass(frozen=True)
class Listener:
    kind: str            # nginx or php-fpm
    address: str
    queue: int           # Recv-Q of a listening socket: connections waiting for accept()
    limit: int           # Send-Q of a listening socket: the accept queue's length (the backlog)

    @property
    def ratio(self) -> float:
        return self.queue / self.limit if self.limit > 0 else 0.0


@dataclass(frozen=True)
class Pool:
    name: str
    listen: str
    ok: bool             # the status page answered
    active: int | None = None
    idle: int | None = None
    listen_queue: int | None = None
    listen_queue_len: int | None = None
    max_children_reached: int | None = None   # a counter since the pool started
    slow_requests: int | None = None          # a counter too


@dataclass(frozen=True)
class Raw:
    """One sample line as the host printed it."""
    seq: int
    uptime: float
    hz: int
    ticks: int                       # the sampler's own CPU time so far, in 1/hz s
    cpu_total: int
    cpu_iowait: int
    load1: float
    mem_total_kb: int
    mem_avail_kb: int
    listen_overflows: int
    listen_drops: int
    listeners: tuple[Listener, ...]
    close_wait: int | None           # None: no php-fpm listener on TCP (unix sockets have no CLOSE_WAIT)
    pools: tuple[Pool, ...]
    log_files: int
    log_new: int                     # bytes the access logs grew by
    log_read: int                    # of which read (at most the sampler's cap per file)
    log_lines: int
    statuses: Mapping[str, int]
    urt: Mapping[int, int] | None    # upstream response time histogram; None: the log format has none


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def parse_line(line: str) -> Raw:
    """A sampler line; ValueError for anything else (a sudo lecture, a shell's complaint)."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a sample: {line[:80]!r}") from exc
    if not isinstance(data, dict) or data.get("watch") != 1:
        raise ValueError(f"not a sample: {line[:80]!r}")
    log = data["log"]
    return Raw(
        seq=int(data["seq"]), uptime=float(data["up"]), hz=int(data["hz"]) or 100, ticks=int(data["ticks"]),
        cpu_total=int(data["cpu"][0]), cpu_iowait=int(data["cpu"][1]), load1=float(data["load"]),
        mem_total_kb=int(data["mem"][0]), mem_avail_kb=int(data["mem"][1]),
        listen_overflows=int(data["tcp"][0]), listen_drops=int(data["tcp"][1]),
        listeners=tuple(Listener(str(k), str(a), int(q), int(m)) for k, a, q, m in data["listen"]),
        close_wait=_int(data["cw"]),
        pools=tuple(Pool(str(n), str(ls), bool(ok), *map(_int, rest)) for n, ls, ok, *rest in data["fpm"]),
        log_files=int(log["files"]), log_new=int(log["new"]), log_read=int(log["read"]),
        log_lines=int(log["lines"]), statuses={str(k): int(v) for k, v in log["s"].items()},
        urt=None if log["urt"] is None else {int(k): int(v) for k, v in log["urt"].items()},
    )


def percentile_ms(histogram: Mapping[int, int], p: float) -> float | None:
    """The p-th percentile (0-100) of a sampler histogram, in ms (the bucket's middle); None if empty."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank, seen = math.ceil(p / 100 * total), 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= max(rank, 1):
            return round(URT_STEP ** (bucket + 0.5) - 1, 1)
    return None   # unreachable: the last bucket reaches the total


@dataclass(frozen=True)
class Figures:
    """One host at one sample: what is shown, recorded and judged. None: not known ("-")."""
    host: str
    time: float                              # when the controller received the sample (epoch s)
    listeners: tuple[Listener, ...]
    overflows_ps: float | None               # ListenOverflows per second (the accept queue was full)
    drops_ps: float | None                   # ListenDrops per second
    close_wait: int | None
    fpm_active: int | None
    fpm_idle: int | None
    fpm_listen_queue: int | None
    fpm_max_children: int | None             # times max children was reached in this interval
    fpm_slow: int | None                     # slow requests in this interval
    rps: float | None                        # access log lines per second
    statuses: Mapping[str, int] = field(default_factory=dict)   # "2xx", "499", ... in this interval
    requests: int = 0                        # lines counted for the shares (scaled when the log was cut)
    p50_ms: float | None = None
    p99_ms: float | None = None
    urt: Mapping[int, int] | None = None     # this interval's histogram (for the fleet's percentiles)
    iowait_pct: float | None = None
    load1: float = 0.0
    mem_used_pct: float = 0.0
    cpu_ms: float | None = None              # the sampler's own CPU time for this sample, in ms
    close_wait_growing: bool = False

    @property
    def worst_listener(self) -> Listener | None:
        return max(self.listeners, key=lambda item: (item.ratio, item.queue), default=None)

    @property
    def queue_ratio(self) -> float:
        worst = self.worst_listener
        return worst.ratio if worst else 0.0

    def share(self, code: str) -> float | None:
        """The share (0-1) of requests with this status ("2xx" or a code); None without requests."""
        return self.statuses.get(code, 0) / self.requests if self.requests else None

    @property
    def share_5xx(self) -> float | None:
        if not self.requests:
            return None
        return sum(self.statuses.get(c, 0) for c in ("502", "503", "504")) / self.requests

    def as_dict(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: that deep-copies every value, and every sample
        # of every host is turned into a record (a tenth of the controller's time on 100 hosts).
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["listeners"] = [dict(vars(item)) for item in self.listeners]
        data["statuses"] = dict(self.statuses)
        data["urt"] = None if self.urt is None else {str(k): v for k, v in self.urt.items()}
        data["shares"] = {code: self.share(code) for code in ("2xx", *SHARE_CODES)}
        data["queue_ratio"] = round(self.queue_ratio, 4)
        return data


def _per_second(now: int, before: int, seconds: float) -> float:
    # A counter that went down was reset (a host rebooted): no rate for this interval.
    return max(now - before, 0) / seconds


def _statuses(raw: Raw) -> tuple[dict[str, int], int]:
    """The status counts by "2xx" and each shared code, scaled up when the log grew past what
    the sampler reads in one sample; and the total."""
    scale = raw.log_new / raw.log_read if raw.log_read and raw.log_new > raw.log_read else 1.0
    counts: dict[str, int] = {}
    for code, count in raw.statuses.items():
        key = "2xx" if code.startswith("2") else code
        counts[key] = counts.get(key, 0) + count
    scaled = {k: round(v * scale) for k, v in counts.items()}
    return scaled, round(raw.log_lines * scale)


def figures(host: str, at: float, cur: Raw, prev: Raw | None = None) -> Figures:
    """The figures of CUR, rates over the interval since PREV (the same session's last sample)."""
    seconds = cur.uptime - prev.uptime if prev is not None else 0.0
    rated = prev is not None and seconds > 0 and cur.seq > prev.seq
    ok_pools = [p for p in cur.pools if p.ok]
    statuses, requests = _statuses(cur)

    def pool_sum(name: str) -> int | None:
        values = [getattr(p, name) for p in ok_pools if getattr(p, name) is not None]
        return sum(values) if values else None

    def pool_delta(name: str) -> int | None:
        if not rated or not ok_pools:
            return None
        before = {(p.name, p.listen): getattr(p, name) for p in prev.pools if p.ok}
        deltas = [max(getattr(p, name) - before[(p.name, p.listen)], 0) for p in ok_pools
                  if getattr(p, name) is not None and before.get((p.name, p.listen)) is not None]
        return sum(deltas) if deltas else None

    cpu_span = cur.cpu_total - prev.cpu_total if rated else 0
    return Figures(
        host=host, time=at, listeners=cur.listeners,
        overflows_ps=_per_second(cur.listen_overflows, prev.listen_overflows, seconds) if rated else None,
        drops_ps=_per_second(cur.listen_drops, prev.listen_drops, seconds) if rated else None,
        close_wait=cur.close_wait,
        fpm_active=pool_sum("active"), fpm_idle=pool_sum("idle"), fpm_listen_queue=pool_sum("listen_queue"),
        fpm_max_children=pool_delta("max_children_reached"), fpm_slow=pool_delta("slow_requests"),
        rps=requests / seconds if rated and cur.log_files else None,
        statuses=statuses if rated else {}, requests=requests if rated else 0,
        p50_ms=percentile_ms(cur.urt, 50) if rated and cur.urt is not None else None,
        p99_ms=percentile_ms(cur.urt, 99) if rated and cur.urt is not None else None,
        urt=dict(cur.urt) if rated and cur.urt is not None else None,
        iowait_pct=100 * (cur.cpu_iowait - prev.cpu_iowait) / cpu_span if cpu_span > 0 else None,
        load1=cur.load1,
        mem_used_pct=100 * (1 - cur.mem_avail_kb / cur.mem_total_kb) if cur.mem_total_kb else 0.0,
        cpu_ms=1000 * (cur.ticks - prev.ticks) / cur.hz / (cur.seq - prev.seq) if rated else None,
    )


def growing(counts: Sequence[int | None], rise: int = CLOSE_WAIT_RISE) -> bool:
    """A count that rose at every one of the last RISE samples, and is above zero: a leak, not noise."""
    recent = list(counts)[-(rise + 1):]
    if len(recent) < rise + 1 or any(c is None for c in recent):
        return False
    return all(b > a for a, b in zip(recent, recent[1:]))   # type: ignore[operator]


def alerts(fig: Figures) -> dict[str, str]:
    """Each figure past its threshold: name -> "bad" or "warn". Names match the view's columns."""
    found: dict[str, str] = {}
    if fig.queue_ratio > QUEUE_RATIO_BAD:
        found["queue"] = "bad"
    if (fig.overflows_ps or 0) > 0 or (fig.drops_ps or 0) > 0:
        found["overflows"] = "bad"
    if (fig.share("499") or 0) > SHARE_499_BAD:
        found["499"] = "bad"
    if (fig.share_5xx or 0) > SHARE_5XX_BAD:
        found["5xx"] = "bad"
    if fig.close_wait_growing:
        found["close_wait"] = "bad"
    if (fig.fpm_max_children or 0) > 0:
        found["fpm"] = "bad"
    elif (fig.fpm_listen_queue or 0) > 0 or (fig.fpm_slow or 0) > 0:
        found["fpm"] = "warn"
    if (fig.iowait_pct or 0) > IOWAIT_WARN:
        found["iowait"] = "warn"
    return found


def badness(fig: Figures | None, lost: bool = False) -> tuple:
    """The sort key of a host, worst first when sorted ascending: lost hosts, then the most
    bad figures, then warnings, then the fullest accept queue, then the most 499s and 5xx."""
    if lost or fig is None:
        return (0, 0, 0, 0.0, 0.0)
    found = alerts(fig)
    bad = sum(1 for v in found.values() if v == "bad")
    warn = len(found) - bad
    return (1, -bad, -warn, -fig.queue_ratio, -((fig.share("499") or 0) + (fig.share_5xx or 0)))


def worst_first(hosts: Iterable[tuple[str, Figures | None, bool]]) -> list[tuple[str, Figures | None, bool]]:
    """(name, figures, lost) worst first; ties by name so the screen does not shuffle."""
    return sorted(hosts, key=lambda item: (badness(item[1], item[2]), item[0]))


@dataclass(frozen=True)
class Fleet:
    """The totals over the hosts that answered."""
    hosts: int
    answering: int
    lost: int
    rps: float | None
    statuses: Mapping[str, int]
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    overflows_ps: float | None
    drops_ps: float | None
    queue_ratio: float
    close_wait: int | None
    fpm_active: int | None
    fpm_idle: int | None
    fpm_listen_queue: int | None
    fpm_max_children: int | None
    iowait_pct: float | None
    load1_max: float | None

    def share(self, code: str) -> float | None:
        return self.statuses.get(code, 0) / self.requests if self.requests else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["shares"] = {code: self.share(code) for code in ("2xx", *SHARE_CODES)}
        return data


def _total(values: Iterable[float | int | None]) -> Any:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def fleet(latest: Mapping[str, Figures | None], lost: Iterable[str] = ()) -> Fleet:
    """Totals of every host's latest figures; lost hosts are counted, not summed."""
    gone = set(lost)
    live = [f for name, f in latest.items() if f is not None and name not in gone]
    statuses: dict[str, int] = {}
    histogram: dict[int, int] = {}
    for fig in live:
        for code, count in fig.statuses.items():
            statuses[code] = statuses.get(code, 0) + count
        for bucket, count in (fig.urt or {}).items():
            histogram[bucket] = histogram.get(bucket, 0) + count
    iowaits = [f.iowait_pct for f in live if f.iowait_pct is not None]
    return Fleet(
        hosts=len(latest), answering=len(live), lost=len(gone & set(latest)),
        rps=_total(f.rps for f in live), statuses=statuses, requests=sum(f.requests for f in live),
        p50_ms=percentile_ms(histogram, 50), p99_ms=percentile_ms(histogram, 99),
        overflows_ps=_total(f.overflows_ps for f in live), drops_ps=_total(f.drops_ps for f in live),
        queue_ratio=max((f.queue_ratio for f in live), default=0.0),
        close_wait=_total(f.close_wait for f in live),
        fpm_active=_total(f.fpm_active for f in live), fpm_idle=_total(f.fpm_idle for f in live),
        fpm_listen_queue=_total(f.fpm_listen_queue for f in live),
        fpm_max_children=_total(f.fpm_max_children for f in live),
        iowait_pct=sum(iowaits) / len(iowaits) if iowaits else None,
        load1_max=max((f.load1 for f in live), default=None),
    )


BLOCKS = "▁▂▃▄▅▆▇█"


def _bins(values: list[float | None], width: int) -> list[float | None]:
    """VALUES in WIDTH bins, each its largest value (a spike must not vanish), oldest first."""
    if len(values) <= width:
        return values
    out: list[float | None] = []
    for i in range(width):
        part = [v for v in values[i * len(values) // width:(i + 1) * len(values) // width] if v is not None]
        out.append(max(part) if part else None)
    return out


def sparkline(values: Sequence[float | None], width: int = 12, top: float | None = None) -> str:
    """VALUES (oldest first, e.g. the last minute) as at most WIDTH unicode blocks, scaled from 0
    to TOP (default: their maximum); a gap for None. All zero: the lowest block (flat, and
    visibly there). A share of a limit passes top=1, so one waiting connection is not a full bar."""
    shown = _bins(list(values), width)
    if top is None:
        top = max((v for v in shown if v is not None), default=0) or 0
    line = ""
    for value in shown:
        if value is None:
            line += " "
        elif top <= 0:
            line += BLOCKS[0]
        else:
            line += BLOCKS[min(len(BLOCKS) - 1, int(min(max(value, 0) / top, 1) * (len(BLOCKS) - 1) + 0.5))]
    return line


def history_size(interval: float, seconds: float = 60.0) -> int:
    """How many samples make SECONDS (the sparklines' minute)."""
    return max(2, math.ceil(seconds / max(interval, 0.1)))
