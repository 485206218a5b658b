"""The capacity model as filters of the opsctl_capacity role.

The rules live in plugins/plugin_utils/, where the opsctl CLI imports them too: one copy. They are
imported on a filter's first call (plugin_utils/lazy.py says why).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.lazy import lazy


class FilterModule:
    """Filters of the opsctl.fleet collection: the capacity model."""

    def filters(self) -> dict[str, Any]:
        return {
            "capacity_plan": lazy("capacity", "_filter_plan"),
            "capacity_error": lazy("capacity", "_filter_error"),
            "capacity_facts_error": lazy("capacity", "_filter_facts_error"),
            "capacity_host": lazy("probe_facts", "capacity_facts"),
        }
