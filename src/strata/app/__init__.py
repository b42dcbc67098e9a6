"""Composition root: what wires the gateway together (``wiring``: ``build_state``, ``create_app``) and runs it
(``lifespan``, the control-loop runner in ``loops``).

``create_app`` and ``build_state`` load lazily, so importing ``strata.app.loops`` stays cheap and free of cycles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from strata.app.wiring import build_state, create_app

__all__ = ["build_state", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from strata.app import wiring

        return getattr(wiring, name)
    raise AttributeError(f"module 'strata.app' has no attribute {name!r}")
