"""The capacity model as filters of the opsctl_capacity role.

The rules live in plugins/plugin_utils/, where the opsctl CLI imports them too: one copy.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils import capacity


class FilterModule:
    """Filters of the opsctl.fleet collection: the capacity model."""

    def filters(self) -> dict[str, Any]:
        return {
            "capacity_plan": capacity._filter_plan,
            "capacity_error": capacity._filter_error,
            "capacity_facts_error": capacity._filter_facts_error,
        }
