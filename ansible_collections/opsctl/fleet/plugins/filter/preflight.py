"""The probe parser and the check catalog engine, as filters of the opsctl_preflight role.

The rules live in plugins/plugin_utils/, where the opsctl CLI imports them too: one copy.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils import check_engine, probe_facts


class FilterModule:
    """Filters of the opsctl.fleet collection: readiness checks."""

    def filters(self) -> dict[str, Any]:
        return {
            "probe_facts": probe_facts.parse,
            "check_evaluate": check_engine._filter_evaluate,
            "check_line": check_engine._filter_line,
        }
