"""Reading the hosts' access logs where they are, for `profile suggest` and `report`.

Each host of the inventory gets one small Python script over SSH (the path `check` uses: one
session per host, in parallel, host keys checked, become with sudo): stdlib modules of the
collection's plugin_utils, the last of which has main(params, *the ones before). They read the
host's access logs under `nice 19` and the idle I/O class at a bounded rate (log_profile.collect)
and answer with one line of JSON: aggregates only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from opsctl.errors import OpsctlError
from opsctl.inventory import Inventory
from opsctl.paths import collection_dir
from opsctl.sshexec import ExecResult, Timeouts, run_many, targets_for

# MB of log read a second at most, uncompressed: parsing runs at 17-27 MB per CPU second, so
# this holds the reader near a fifth of one core (measured: 18.5 MB in 4.6 s, 0.98 s of CPU; a
# 1 GB log in 250 s, 41 s of CPU, bench/report_1gb_bench.py), and a GB takes about 4 minutes.
DEFAULT_RATE_MB = 4


def parse_rate(mb: float) -> float:
    if not (math.isfinite(mb) and 0 < mb <= 10_000):
        raise OpsctlError(f"--rate {mb:g}: expected MB a second above 0 and at most 10000")
    return mb


@dataclass
class HostFigures:
    name: str
    ok: bool
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)


# The package the plugin_utils modules import each other by, defined on the host too.
PACKAGE = "ansible_collections.opsctl.fleet.plugins.plugin_utils"


def host_script(modules: tuple[str, ...], params: dict[str, Any], needs: tuple[str, ...] = ()) -> bytes:
    """MODULES (plugin_utils names) as modules of their own on the host, then the last one's
    main(PARAMS, *the others in order). NEEDS: modules defined before them, not passed in (those
    the modules import, by their plugin_utils name). Each is defined under its own name and
    under PACKAGE, so `from ansible_collections...plugin_utils import X` works on the host."""
    plugin_utils = collection_dir() / "plugins" / "plugin_utils"
    sources = {name: (plugin_utils / f"{name}.py").read_text(encoding="utf-8") for name in needs + modules}
    helpers = ", ".join(f"sys.modules[{name!r}]" for name in modules[:-1])
    return (
        "import sys, types\n"
        f"PACKAGE = {PACKAGE!r}\n"
        "_parts = PACKAGE.split('.')\n"
        "for _i in range(1, len(_parts) + 1):\n"
        "    _pkg = sys.modules.setdefault('.'.join(_parts[:_i]), types.ModuleType('.'.join(_parts[:_i])))\n"
        "    _pkg.__path__ = []\n"
        "    if _i > 1:\n"
        "        setattr(sys.modules['.'.join(_parts[:_i - 1])], _parts[_i - 1], _pkg)\n"
        f"SOURCES = {sources!r}\n"
        "for _name, _text in SOURCES.items():\n"
        "    _mod = sys.modules[_name] = sys.modules[PACKAGE + '.' + _name] = types.ModuleType(PACKAGE + '.' + _name)\n"
        "    setattr(sys.modules[PACKAGE], _name, _mod)\n"
        "    exec(compile(_text, _name + '.py', 'exec'), _mod.__dict__)\n"
        f"sys.modules[{modules[-1]!r}].main({json.dumps(params)}, {helpers})\n"
    ).encode()


def run_on_hosts(inv: Inventory, script: bytes, timeout_s: float,
                 on_host: Callable[[HostFigures], None] | None = None) -> list[HostFigures]:
    """SCRIPT on every host of INV; each host's JSON answer, in inventory order."""
    timeouts = Timeouts(host=timeout_s, run=timeout_s + 30)
    figures: list[HostFigures] = []

    def done(answer: ExecResult) -> None:
        figures.append(_host_figures(answer))
        if on_host:
            on_host(figures[-1])

    # python3 reads the script on stdin; it lowers its own priority first (log_profile.collect).
    run_many(targets_for(inv.hosts, inv.ssh), script, "python3 -", timeouts=timeouts, on_result=done)
    order = {h.name: i for i, h in enumerate(inv.hosts)}
    return sorted(figures, key=lambda f: order[f.name])


def _host_figures(answer: ExecResult) -> HostFigures:
    if not answer.ok:
        return HostFigures(answer.host, False, answer.error)
    try:
        data = json.loads(answer.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return HostFigures(answer.host, False, f"the aggregation printed no JSON: {answer.stdout[:200]!r}")
    return HostFigures(answer.host, True, data=data)
