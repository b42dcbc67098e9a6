"""Third-party plugins: entry points of a group (``strata.engines``, ``strata.guards``), read from package
metadata without importing them."""

from __future__ import annotations

import logging
from collections.abc import Container
from importlib.metadata import EntryPoint, entry_points

log = logging.getLogger(__name__)


def discover(group: str, builtin: Container[str], what: str) -> dict[str, EntryPoint]:
    """The installed plugins of ``group`` by name; one whose name a built-in (or an earlier plugin) has is
    ignored with a warning."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        if ep.name in builtin or ep.name in found:
            log.warning("%s plugin %s = %s ignored: the name %r is already taken", what, ep.name, ep.value, ep.name)
            continue
        found[ep.name] = ep
    return found
