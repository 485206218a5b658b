"""What `opsctl profile suggest` measures on a host, where the logs are: the access logs nginx
writes (rotated ones included, gzip or not) streamed through access_log.Reader into compact
aggregates, and the resident memory of the running php-fpm workers. Only the aggregates leave
the host: the busiest second and minute, and latency histograms; never a log line.

Written to run on the hosts (`python3 -`, sent by opsctl/profile_suggest.py beside access_log.py
and log_facts.py): standard library only, Python 3.7 and later. The access_log module is passed
in; log_facts (which log paths are files) is imported, as opsctl.host_logs defines it on the host.

Histograms count milliseconds exactly up to 1 s and to three significant digits above (a bucket
is at most 0.5% wide around its value): percentiles within 1% of the exact ones, and a histogram
of at most a few thousand buckets whatever the traffic.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import subprocess
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ansible_collections.opsctl.fleet.plugins.plugin_utils.log_facts import below_prefix, is_log_file

Counts = Dict[int, int]

EXACT_BELOW_MS = 1000
CHUNK = 1 << 20                 # the rate is kept per MiB read
# Rotated siblings of a log: access.log.1, access.log.2.gz, access.log-20261206(.gz).
_ROTATED = re.compile(r"\.\d+(\.gz)?$|-\d{8}(\d\d)?(\.gz)?$")
_LOG_DIRECTIVE = r"""(?:^|[;{}])\s*%s\s+("[^"]*"|'[^']*'|[^\s;]+)"""
DEFAULT_LOGS = "/var/log/nginx/*access*.log"
_BUILT_ERROR_LOG = re.compile(r"--error-log-path=(\S+)")
# log_format NAME [escape=...] 'part' "part" ...;  (the parts may span lines)
_QUOTED_PARTS = r"'(?:[^'\\]|\\.)*'" + r'|"(?:[^"\\]|\\.)*"'
_LOG_FORMAT = re.compile(r"(?:^|[;{}])\s*log_format\s+(\w+)\s+(?:escape=\w+\s+)?((?:" + _QUOTED_PARTS + r"|\s+)+);", re.M)
_PART = re.compile(_QUOTED_PARTS)
_ESCAPE = re.compile(r"\\(.)")   # nginx reads \" in a quoted string as "


# --- the pure part: histograms and peaks ---------------------------------------------------------

def bucket(ms: float) -> int:
    """The histogram key of a time in ms: the ms below 1 s, three significant digits above."""
    value = int(round(ms))
    if value < EXACT_BELOW_MS:
        return max(value, 0)
    digits = len(str(value)) - 3
    return int(round(value, -digits))


def percentile(counts: Counts, q: float) -> Optional[int]:
    """Nearest rank: the least value with at least q of all counted at or below it."""
    total = sum(counts.values())
    if not total:
        return None
    rank = max(1, -(-int(round(q * total * 1000)) // 1000))   # ceil(q * total), without float dust
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return max(counts)


def merge(histograms: Iterable[Counts]) -> Counts:
    out: Counts = {}
    for counts in histograms:
        for value, n in counts.items():
            out[int(value)] = out.get(int(value), 0) + int(n)
    return out


def busiest(per_second: Counts, width: int) -> Tuple[int, Optional[int]]:
    """(requests, start epoch) of the busiest `width`-second slot aligned on the clock (a whole
    second, a whole minute); (0, None) without requests."""
    slots: Counts = {}
    for second, n in per_second.items():
        slot = second - second % width
        slots[slot] = slots.get(slot, 0) + n
    if not slots:
        return 0, None
    start = max(slots, key=lambda s: (slots[s], -s))   # the earliest of equal ones
    return slots[start], start


# --- reading the files ---------------------------------------------------------------------------

class Throttle:
    """Sleeps so that reading goes no faster than `rate` bytes a second (0: unbounded)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.started = clock()
        self.done = 0
        self.slept = 0.0

    def account(self, nbytes: int) -> None:
        self.done += nbytes
        if self.rate <= 0:
            return
        ahead = self.done / self.rate - (self.clock() - self.started)
        if ahead > 0.01:
            self.sleep(ahead)
            self.slept += ahead


def _lines(path: str, throttle: Throttle) -> Iterator[str]:
    raw = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    with raw:
        pending = 0
        for line in raw:
            pending += len(line)
            if pending >= CHUNK:
                throttle.account(pending)
                pending = 0
            yield line.decode("utf-8", "replace")
        throttle.account(pending)


class Window:
    """The time filter every aggregation shares: lines written from `since` up to, not
    including, `until` (None: no end); counts what it let through and its first and last."""

    def __init__(self, since: float, until: Optional[float] = None) -> None:
        self.since, self.until = since, until
        self.in_window = 0
        self.first: Optional[float] = None
        self.last: Optional[float] = None

    def admit(self, entry: Any) -> bool:
        """Whether ENTRY is in the window (counted if so)."""
        t = entry.time
        if t is None or t < self.since or (self.until is not None and t >= self.until):
            return False
        self.in_window += 1
        self.first = t if self.first is None else min(self.first, t)
        self.last = t if self.last is None else max(self.last, t)
        return True

    def summary(self) -> Dict[str, Any]:
        return {"in_window": self.in_window, "first": self.first, "last": self.last}


class Aggregate(Window):
    """Requests counted per second, request and upstream times per ms bucket, within a window."""

    def __init__(self, since: float, until: Optional[float] = None) -> None:
        super().__init__(since, until)
        self.per_second: Counts = {}
        self.request_ms: Counts = {}
        self.upstream_ms: Counts = {}

    def add(self, entry: Any) -> None:
        if not self.admit(entry):
            return
        second = int(entry.time)
        add_counts(self.per_second, second)
        if entry.request_time is not None:
            add_counts(self.request_ms, bucket(entry.request_time * 1000))
        times = [t for t in entry.upstream_response_time or () if t is not None]
        if times:   # the time spent upstream: every attempt's (a retry's too)
            add_counts(self.upstream_ms, bucket(sum(times) * 1000))

    def summary(self) -> Dict[str, Any]:
        peak_1s, at_1s = busiest(self.per_second, 1)
        peak_1m, at_1m = busiest(self.per_second, 60)
        return {**super().summary(),
                "peak_1s": {"requests": peak_1s, "at": at_1s},
                "peak_1m": {"requests": peak_1m, "at": at_1m},
                "request_ms": {str(k): v for k, v in sorted(self.request_ms.items())},
                "upstream_ms": {str(k): v for k, v in sorted(self.upstream_ms.items())}}


def add_counts(counts: Counts, key: Any, n: int = 1) -> None:
    counts[key] = counts.get(key, 0) + n


def scan(paths: List[str], agg: Any, reader: Any, throttle: Throttle) -> Dict[str, Any]:
    """Every file's lines through the reader into AGG (a Window with add() and summary()); a
    file last written before the window is skipped unread (rotated logs older than it)."""
    since = agg.since
    files, errors = [], []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror}")
            continue
        if stat.st_mtime < since:
            files.append({"path": path, "bytes": stat.st_size, "read": False})
            continue
        before = reader.lines
        try:
            for entry in reader.entries(_lines(path, throttle)):
                agg.add(entry)
        except (OSError, EOFError) as exc:   # a truncated .gz: what was read counts
            errors.append(f"{path}: {exc}")
        files.append({"path": path, "bytes": stat.st_size, "read": True, "lines": reader.lines - before})
    out = agg.summary()
    out.update(files=files, errors=errors, lines=reader.lines, unreadable=reader.unreadable,
               throttled_s=round(throttle.slept, 2))
    return out


# --- what runs on the host -------------------------------------------------------------------------

def _nginx_masters() -> List[List[str]]:
    """The command line of each running nginx master: `nginx: master process /usr/sbin/nginx -c X`."""
    found = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(cmdline, "rb") as f:
                text = f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if text.startswith("nginx: master process "):
            found.append(text[len("nginx: master process "):].split())
    return found


def _run(command: List[str]) -> str:
    """What a command prints on stdout and stderr (nginx -V writes to stderr); "" if it cannot run."""
    try:
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30,
                              check=False).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return ""


def named_logs(config: str, prefix: str, directive: str = "access_log") -> List[str]:
    """The files an `nginx -T` text names in DIRECTIVE (access_log, error_log), as nginx opens
    them (below_prefix)."""
    pattern = re.compile(_LOG_DIRECTIVE % directive)
    paths = []
    for line in config.splitlines():
        for match in pattern.finditer(line.split("#", 1)[0]):   # a comment names no log
            path = match.group(1).strip("'\"")
            if is_log_file(path):
                paths.append(below_prefix(path, prefix))
    return paths


def log_formats(config: str) -> List[Tuple[str, str]]:
    """(name, definition) of every log_format of an `nginx -T` text, its quoted parts joined."""
    text = "\n".join(line.split("#", 1)[0] for line in config.splitlines())
    return [(m.group(1), "".join(_ESCAPE.sub(r"\1", part[1:-1]) for part in _PART.findall(m.group(2))))
            for m in _LOG_FORMAT.finditer(text)]


def _config(words: List[str]) -> Tuple[str, str, str]:
    """(nginx -T text, prefix, nginx -V text) of the configuration a master runs (with its -c and -p)."""
    given = [w for i, w in enumerate(words[1:], 1) if w in ("-c", "-p") or words[i - 1] in ("-c", "-p")]
    built = _run([words[0], "-V"])
    prefix = given[given.index("-p") + 1] if "-p" in given[:-1] else ""
    if not prefix:
        found = re.search(r"--prefix=(\S+)", built)
        prefix = found.group(1) if found else "/etc/nginx"
    return _run([words[0], "-T"] + given), prefix, built


def with_rotated(paths: Iterable[str]) -> List[str]:
    """Each log and its rotated siblings, each file once, oldest rotation first."""
    out: List[str] = []
    for path in paths:
        siblings = [p for p in glob.glob(glob.escape(path) + "[.-]*") if _ROTATED.search(p[len(path):])]
        for name in sorted(siblings, key=_mtime):
            if name not in out:
                out.append(name)
        if os.path.isfile(path) and path not in out:
            out.append(path)
    return out


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


def access_logs(configs: List[Tuple[str, str, str]]) -> List[str]:
    named = [p for text, prefix, _built in configs for p in named_logs(text, prefix)]
    return with_rotated(dict.fromkeys(named + sorted(glob.glob(DEFAULT_LOGS))))


def error_logs(configs: List[Tuple[str, str, str]]) -> List[str]:
    """The error logs each configuration names, else the one its nginx was built with (nginx -V
    `--error-log-path`), rotated siblings included."""
    paths: List[str] = []
    for text, prefix, built in configs:
        named = named_logs(text, prefix, "error_log")
        default = _BUILT_ERROR_LOG.search(built)
        if not named and default:
            named = [below_prefix(default.group(1), prefix)]
        paths += named
    return with_rotated(dict.fromkeys(paths))


def fpm_worker_rss_kb() -> List[int]:
    """The resident memory of every running php-fpm pool worker (not the masters), in KiB."""
    out = []
    for cmdline in glob.glob("/proc/[0-9]*/cmdline"):
        pid_dir = os.path.dirname(cmdline)
        try:
            with open(cmdline, "rb") as f:
                if not f.read(64).startswith(b"php-fpm: pool "):
                    continue
            with open(os.path.join(pid_dir, "status")) as f:
                rss = [line.split()[1] for line in f if line.startswith("VmRSS:")]
        except OSError:
            continue   # ended meanwhile
        if rss:
            out.append(int(rss[0]))
    return sorted(out)


def _compiled(access_log: Any, formats: Dict[str, str]) -> List[Any]:
    """The site's formats as the reader's LogFormats; one that does not compile is left out (its
    lines then read as opsctl_timing or combined, or count as unreadable)."""
    out = []
    for name, text in formats.items():
        if name == access_log.OPSCTL_TIMING_NAME:
            continue   # the reader has it already
        try:
            out.append(access_log.LogFormat(text, name))
        except (re.error, ValueError, RecursionError):
            continue
    return out


def _lower_priority() -> None:
    """Idle CPU and idle I/O class: what the host serves always goes first."""
    try:
        os.nice(19)
    except OSError:
        pass
    try:
        subprocess.run(["ionice", "-c3", "-p", str(os.getpid())], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        pass


def collect(params: Dict[str, Any], access_log: Any, agg: Any,
            more: Optional[Callable[[List[Tuple[str, str, str]], Throttle], Dict[str, Any]]] = None) -> Dict[str, Any]:
    """This host's access logs through AGG, at low priority and the given rate: what every
    command that reads the logs on the hosts shares (`profile suggest`, `report`). Lines are
    read by the site's own log_formats first (from nginx -T), then access_log's. MORE(the nginx
    configurations, the throttle): what else to read under the same rate, merged into the answer."""
    _lower_priority()
    started = time.monotonic()
    # Given paths (the tests'): read those, by access_log's formats only.
    configs = [] if params.get("paths") else [_config(words) for words in _nginx_masters() if words]
    formats = {name: text for config, _prefix, _built in configs for name, text in log_formats(config)}
    reader = access_log.Reader(_compiled(access_log, formats))
    paths = params.get("paths") or access_logs(configs)
    throttle = Throttle(float(params.get("rate", 0)))
    out = scan(paths, agg, reader, throttle)
    if more is not None:
        out.update(more(configs, throttle))
    out.update(elapsed_s=round(time.monotonic() - started, 2), now=time.time(), throttled_s=round(throttle.slept, 2))
    return out


def main(params: Dict[str, Any], access_log: Any) -> None:
    """Print one JSON object: the aggregates of this host's access logs and its workers' RSS."""
    out = collect(params, access_log, Aggregate(float(params["since"])))
    out.update(fpm_rss_kb=fpm_worker_rss_kb())
    print(json.dumps(out))
