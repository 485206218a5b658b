"""The event profile as the CLI sees it: the schema and its parser live once, in the collection
(plugins/plugin_utils/event_profile.py, also read by the capacity model); here its errors become
opsctl's one-line usage errors."""

from __future__ import annotations

from typing import Any

from ansible_collections.opsctl.fleet.plugins.plugin_utils import event_profile
from ansible_collections.opsctl.fleet.plugins.plugin_utils.event_profile import VAR_NAME, EventProfile
from ansible_collections.opsctl.fleet.plugins.plugin_utils.events import DEFAULT_PREPARE, EventWindow

from opsctl.errors import OpsctlError

__all__ = ["DEFAULT_PREPARE", "VAR_NAME", "EventProfile", "EventWindow", "ProfileError", "parse_profile"]


class ProfileError(OpsctlError):
    """An event profile that does not follow the schema."""


def parse_profile(value: Any, where: str = VAR_NAME) -> EventProfile:
    """Validate a raw ``opsctl_event`` value; every error names the offending key."""
    try:
        return event_profile.parse_profile(value, where)
    except event_profile.ProfileError as exc:
        raise ProfileError(str(exc)) from None
