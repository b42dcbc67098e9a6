"""Routing as one service of the application state: the router over its engines and their health, the route
changes applied here, rollouts, and one complexity scorer per route."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from strata.engines.base import Engine, EngineHealth
from strata.routing.changes import RouteChangeStore
from strata.routing.complexity import Embed, Scorer, TransparentScorer
from strata.routing.rollout import Rollouts
from strata.routing.router import Router


@dataclass
class Routing:
    router: Router
    engines: dict[str, Engine]
    route_changes: RouteChangeStore
    rollouts: Rollouts
    health: dict[str, EngineHealth] = field(default_factory=dict)
    scorers: dict[str, Scorer] = field(default_factory=dict)
    seen_change: tuple[int, int] = (0, 0)  # (count, newest id) of the route changes applied here
    route_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def context_window(self, deployment: str) -> int | None:
        """The context length of a deployment's engine (None: unknown, or no such deployment)."""
        engine = self.engines.get(deployment)
        return engine.context_length if engine is not None else None

    def refresh_scorers(self, embedder: Callable[[str | None], Embed | None]) -> None:
        """One complexity scorer per router route; rebuilt when the route's complexity config changes.
        ``embedder``: embeddings through a route (``pipeline.internal.embedder``)."""
        for name, route in self.router.routes.items():
            current = self.scorers.get(name)
            if route.complexity is None:
                self.scorers.pop(name, None)
            elif not (isinstance(current, TransparentScorer) and current.cfg == route.complexity):
                self.scorers[name] = TransparentScorer(route.complexity, embedder(route.complexity.embeddings_route))
