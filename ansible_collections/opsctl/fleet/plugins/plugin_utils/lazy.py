"""Filters whose code is imported on their first call.

Why: to find one filter by its FQCN, ansible-core imports every filter file of the collection,
in every worker process, that is for every task and host that uses one. Importing the model,
the probe parser and the check engine that way cost about 0.15 s of CPU per task and host
(docs/architecture.md, "Converged runs"). The filter files stay cheap to import; the rules load
when a filter is really called.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

_UTILS = "ansible_collections.opsctl.fleet.plugins.plugin_utils."


def lazy(module: str, name: str) -> Callable[..., Any]:
    """plugin_utils.`module`.`name`, imported when first called."""
    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(_UTILS + module), name)(*args, **kwargs)
    call.__name__ = name
    call.__qualname__ = name
    return call
