"""Detector types by name: the built-ins (imported on first use) and plugins from the ``strata.guards``
entry-point group (see ``guard.base.GuardSpec``).

``injection`` lives in ``strata.guard.injection`` (its ``SPEC``, or a ``detector(options)`` factory); when
that module is not there, a rule naming it is a config error that says so.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import EntryPoint
from typing import Any

from strata.guard.base import GuardSpec
from strata.plugins import discover

GROUP = "strata.guards"
BUILTIN: dict[str, str] = {
    "pii": "strata.guard.pii:PII",
    "secrets": "strata.guard.pii:SECRETS",
    "json_schema": "strata.guard.output:JSON_SCHEMA",
    "refusal": "strata.guard.output:REFUSAL",
    "max_length": "strata.guard.output:MAX_LENGTH",
    "injection": "strata.guard.injection:SPEC",
}


class UnknownGuard(ValueError):
    """A detector no built-in or installed plugin provides, or one that cannot be loaded."""


@cache
def plugins() -> dict[str, EntryPoint]:
    """Installed third-party detectors (read from package metadata once; nothing is imported)."""
    return discover(GROUP, BUILTIN, "guard")


def known() -> list[str]:
    return [*BUILTIN, *sorted(plugins())]


@cache
def spec(name: str) -> GuardSpec:
    """The detector type called ``name``; raises ``UnknownGuard`` naming the known ones."""
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            raise UnknownGuard(f"{name!r} is not installed ({module} is missing)") from None
        found = getattr(mod, attr, None) or getattr(mod, "detector", None)
        if found is None:
            raise UnknownGuard(f"{name!r}: {module} has no {attr} (a GuardSpec) or detector factory")
        return _as_spec(found)
    ep = plugins().get(name)
    if ep is None:
        raise UnknownGuard(f"unknown detector {name!r} (one of {', '.join(known())})")
    try:
        return _as_spec(ep.load())
    except Exception as exc:
        raise UnknownGuard(f"guard plugin {name!r} ({ep.value}) cannot be loaded: {exc}") from None


def _as_spec(obj: Any) -> GuardSpec:
    if isinstance(obj, GuardSpec):
        return obj
    if callable(obj):  # a factory taking the options mapping (unvalidated)
        return GuardSpec(None, lambda _opts: obj({}))
    raise UnknownGuard(f"{obj!r} is neither a GuardSpec nor a detector factory")
