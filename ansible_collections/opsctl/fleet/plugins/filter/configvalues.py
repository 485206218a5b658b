"""Every role variable's value rule, as the filter of the roles' validate tasks.

The rules live in plugins/plugin_utils/, where the opsctl CLI imports them too: one copy. They are
imported on a filter's first call (plugin_utils/lazy.py says why).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.lazy import lazy


class FilterModule:
    """Filters of the opsctl.fleet collection: value rules."""

    def filters(self) -> dict[str, Any]:
        return {
            "config_problem": lazy("configvalues", "_filter_problem"),
        }
