"""Log rotation slots and value checks, as filters of the opsctl_logrotate role.

The rules live in plugins/plugin_utils/, where the opsctl CLI imports them too: one copy. They are
imported on a filter's first call (plugin_utils/lazy.py says why).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.lazy import lazy


class FilterModule:
    """Filters of the opsctl.fleet collection: log rotation."""

    def filters(self) -> dict[str, Any]:
        return {
            "logrotate_problems": lazy("logrotate_vars", "role_problems"),
            "logrotate_slot": lazy("logslots", "_filter_slot"),
            "logrotate_host_local": lazy("logslots", "host_local"),
            "logrotate_window_error": lazy("logslots", "window_error"),
        }
