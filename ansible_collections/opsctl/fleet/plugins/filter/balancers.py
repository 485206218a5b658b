"""What an `opsctl_balancers` entry may hold, as the filter of the drain role's first task.

The rule lives in plugins/plugin_utils/balancer_entries.py, where the opsctl CLI imports it too:
one copy. It is imported on the filter's first call (plugin_utils/lazy.py says why).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.lazy import lazy


class FilterModule:
    """Filters of the opsctl.fleet collection: balancer entries."""

    def filters(self) -> dict[str, Any]:
        return {
            "balancer_problem": lazy("balancer_entries", "_filter_problem"),
        }
