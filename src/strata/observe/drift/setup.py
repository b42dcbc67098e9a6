"""Building the drift monitor from the application state (called by the composition root when
``drift.enabled``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from strata.errors import ConfigError
from strata.observe.drift.monitor import DriftMonitor, Embed
from strata.observe.drift.store import DriftStore

if TYPE_CHECKING:
    from strata.gateway.state import AppState


def build_monitor(state: AppState) -> DriftMonitor:
    cfg = state.settings.drift
    routes = state.routing.router.routes
    for name in cfg.routes or []:
        if name not in routes:
            raise ConfigError(f"drift.routes: no route named {name!r}")
    if cfg.embedding_route is not None and cfg.embedding_route not in routes:
        raise ConfigError(f"drift.embedding_route: no route named {cfg.embedding_route!r} (null: no embedding "
                          "signals)")
    embed = _embedder(state, cfg.embedding_route) if cfg.embedding_route is not None else None
    return DriftMonitor(cfg, DriftStore(state.db), state.observe.metrics, state.observe.events.emit, embed)


def _embedder(state: AppState, route: str) -> Embed:
    """Embeddings through the route's deployments like any internal call (``pipeline.internal``): attempts,
    breakers, and a ledger row of role ``drift`` per batch."""
    from strata.pipeline.internal import internal
    from strata.pipeline.record import CallRecord

    async def embed(texts: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": "", "input": texts}
        parent = CallRecord(state.new_id(), "embeddings")
        result = await internal(state, parent, route, "drift", "embeddings", body, lambda t: t.engine.embed(body))
        return [d["embedding"] for d in sorted(result["data"], key=lambda d: d["index"])]

    return embed
