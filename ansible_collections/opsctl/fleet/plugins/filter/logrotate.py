"""Log rotation slots and value checks, as filters of the opsctl_logrotate role.

The rules live in plugins/plugin_utils/, where the opsctl CLI imports them too: one copy.
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils import logrotate_vars, logslots


class FilterModule:
    """Filters of the opsctl.fleet collection: log rotation."""

    def filters(self) -> dict[str, Any]:
        return {
            "logrotate_problems": logrotate_vars.role_problems,
            "logrotate_slot": logslots._filter_slot,
            "logrotate_host_local": logslots.host_local,
            "logrotate_window_error": logslots.window_error,
        }
