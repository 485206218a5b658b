"""The probe parser and the check catalog engine, as filters of the opsctl_preflight role.

The rules live in plugins/plugin_utils/, where the opsctl CLI imports them too: one copy. They are
imported on a filter's first call (plugin_utils/lazy.py says why).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.lazy import lazy


class FilterModule:
    """Filters of the opsctl.fleet collection: readiness checks."""

    def filters(self) -> dict[str, Any]:
        return {
            "probe_facts": lazy("probe_facts", "parse"),
            "check_evaluate": lazy("check_engine", "_filter_evaluate"),
            "check_line": lazy("check_engine", "_filter_line"),
        }
