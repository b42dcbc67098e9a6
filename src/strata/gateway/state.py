"""The application state: everything the gateway holds, built once in ``create_app``."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine as DbEngine

from strata.config.settings import Settings
from strata.engines.base import Engine, EngineHealth
from strata.gateway.cache import ExactCache
from strata.gateway.semantic import SemanticCache
from strata.governance.abuse import ConcurrencyCaps
from strata.governance.auth import Authenticator
from strata.governance.governor import Governor
from strata.governance.keys import KeyStore
from strata.governance.policies import PolicyStore
from strata.observe.audit import AuditLog
from strata.observe.events import EventStore
from strata.observe.ledger import LedgerWriter
from strata.observe.metrics import Metrics
from strata.observe.tracing import Tracer, TracingSettings
from strata.pipeline.record import CallRecord, RequestIds
from strata.routing.changes import RouteChangeStore
from strata.routing.complexity import Embed, Scorer, TransparentScorer
from strata.routing.outlier import CallerOutliers
from strata.routing.rollout import Rollouts
from strata.routing.router import Router
from strata.state.shared import SharedState


@dataclass
class AppState:
    settings: Settings
    db: DbEngine
    keys: KeyStore
    auth: Authenticator
    metrics: Metrics
    ledger: LedgerWriter
    router: Router
    engines: dict[str, Engine]
    route_changes: RouteChangeStore
    events: EventStore
    rollouts: Rollouts
    shared: SharedState
    policies: PolicyStore
    governor: Governor
    audit: AuditLog  # the tamper-evident trail of admin changes: ``await state.audit.record(…)``
    tracer: Tracer = field(default_factory=lambda: Tracer(TracingSettings(enabled=False), None))
    new_id: RequestIds = field(default_factory=RequestIds)
    started_at: float = field(default_factory=time.time)
    health: dict[str, EngineHealth] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    background: set[asyncio.Task[None]] = field(default_factory=set)  # shadow mirrors
    shadow_running: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    scorers: dict[str, Scorer] = field(default_factory=dict)
    cache: ExactCache = field(default_factory=ExactCache)
    semantic: SemanticCache = field(default_factory=SemanticCache)
    seen_change: tuple[int, int] = (0, 0)  # (count, newest id) of the route changes applied here
    route_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settling: set[asyncio.Task[None]] = field(default_factory=set)  # governance settlements, awaited on stop
    callers: CallerOutliers = field(default_factory=CallerOutliers)  # keys whose requests keep failing upstream
    caps: ConcurrencyCaps = field(default_factory=ConcurrencyCaps)  # each capped key's requests in flight

    def context_window(self, deployment: str) -> int | None:
        """The context length of a deployment's engine (None: unknown, or no such deployment)."""
        engine = self.engines.get(deployment)
        return engine.context_length if engine is not None else None

    def refresh_scorers(self) -> None:
        """One complexity scorer per router route; rebuilt when the route's complexity config changes."""
        for name, route in self.router.routes.items():
            current = self.scorers.get(name)
            if route.complexity is None:
                self.scorers.pop(name, None)
            elif not (isinstance(current, TransparentScorer) and current.cfg == route.complexity):
                embed = self.embedder(route.complexity.embeddings_route)
                self.scorers[name] = TransparentScorer(route.complexity, embed)

    def embedder(self, route_name: str | None) -> Embed | None:
        """Embeddings through a route's deployments (e.g. the bundled MiniLM), for scoring and comparing.

        Each call goes through the route's attempts like a client's request (``pipeline.internal``) and gets
        a ledger row of role ``embedding``, under the id of the request that needed it (``parent``).
        """
        if route_name is None:
            return None

        async def embed(texts: list[str], parent: CallRecord | None = None) -> list[list[float]]:
            from strata.pipeline.internal import internal  # the pipeline is built on this state

            body: dict[str, Any] = {"model": "", "input": texts}
            result = await internal(self, parent, route_name, "embedding", "embeddings", body,
                                    lambda t: t.engine.embed(body))
            return [d["embedding"] for d in sorted(result["data"], key=lambda d: d["index"])]

        return embed
