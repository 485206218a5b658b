"""The `opsctl watch --record` file on `opsctl report`'s timeline: per host and minute, the worst
accept-queue depth seen (and its limit), the highest listen-overflow rate, the most CLOSE_WAIT,
and the minutes a host's session was lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.durations import clip
from ansible_collections.opsctl.fleet.plugins.plugin_utils.log_report import MINUTE

from opsctl.errors import OpsctlError


def _worst(values: list[Any]) -> Any:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _minute_row(samples: list[dict[str, Any]], lost: int) -> dict[str, Any]:
    listeners = [item for s in samples for item in s.get("listeners") or ()]
    deepest = max(listeners, key=lambda item: (item.get("queue", 0), item.get("limit", 0)), default=None)
    return {"samples": len(samples), "lost": lost,
            "queue_max": deepest["queue"] if deepest else None, "queue_limit": deepest["limit"] if deepest else None,
            "queue_at": deepest["address"] if deepest else None,
            "overflows_ps_max": _worst([s.get("overflows_ps") for s in samples]),
            "close_wait_max": _worst([s.get("close_wait") for s in samples])}


def read_record(path: str, since: float, until: float) -> dict[str, list[dict[str, Any]]]:
    """Host -> its minutes in [since, until) that the record holds, oldest first."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OpsctlError(f"--record {clip(path)}: cannot read it: {exc}") from None
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {}
    lost: dict[tuple[str, int], int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            host, at = str(entry["host"]), float(entry["time"])
        except (ValueError, KeyError, TypeError):
            raise OpsctlError(f"--record {clip(path)}: line {number} is no `opsctl watch --record` line") from None
        if not since <= at < until:
            continue
        key = (host, int(at) // MINUTE * MINUTE)
        if isinstance(entry.get("figures"), dict):
            samples.setdefault(key, []).append(entry["figures"])
        elif entry.get("state"):
            lost[key] = lost.get(key, 0) + 1
    out: dict[str, list[dict[str, Any]]] = {}
    for host, minute in sorted(set(samples) | set(lost)):
        row = _minute_row(samples.get((host, minute), []), lost.get((host, minute), 0))
        out.setdefault(host, []).append({"epoch": minute, **row})
    return out
