"""Typed configuration: one pydantic-settings tree, loaded once at startup.

Each package owns its config models (``strata.routing.config``, ``strata.governance.config``, ...);
``strata.config.settings`` composes them into the root. The names here are imported on first use, so a
package's ``config.py`` can import ``strata.config.base`` without pulling in the root that imports it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strata.config.settings import DeploymentConfig, RouteConfig, Settings, load_settings

__all__ = ["DeploymentConfig", "RouteConfig", "Settings", "load_settings"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from strata.config import settings

        return getattr(settings, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
