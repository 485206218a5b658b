"""HAProxy configuration filters of the opsctl_haproxy role.

The rules live in plugins/plugin_utils/haproxy_cfg.py, where check's probe facts read the same
configuration: one copy. Imported on a filter's first call (plugin_utils/lazy.py says why).
"""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils.lazy import lazy


class FilterModule:
    """Filters of the opsctl.fleet collection: HAProxy's configuration."""

    def filters(self) -> dict[str, Any]:
        return {
            "haproxy_backends": lazy("haproxy_cfg", "_filter_backends"),
            "haproxy_cfg_set": lazy("haproxy_cfg", "_filter_set"),
            "haproxy_missing_backends": lazy("haproxy_cfg", "_filter_missing"),
        }
