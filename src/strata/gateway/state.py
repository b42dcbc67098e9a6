"""The application state: a few typed services, built once by the composition root (``strata.app``).

Each service lives in the package that owns it: ``governance`` (keys, auth, policies, the governor, abuse
caps, budget settlements), ``routing`` (router, engines, health, route changes, rollouts, scorers),
``observe`` (metrics, ledger, events, tracing, audit); the gateway's own caches and background tasks are here.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine as DbEngine

from strata.config.settings import Settings
from strata.data.service import DataService
from strata.files.store import FileStore
from strata.gateway.cache import ExactCache
from strata.gateway.semantic import SemanticCache
from strata.governance.service import Governance
from strata.observe.service import Observe
from strata.pipeline.record import RequestIds
from strata.routing.service import Routing


@dataclass
class Caches:
    exact: ExactCache = field(default_factory=ExactCache)
    semantic: SemanticCache = field(default_factory=SemanticCache)


@dataclass
class Tasks:
    """Work the gateway started on the side; cancelled and awaited on shutdown."""

    drains: list[asyncio.Task[None]] = field(default_factory=list)  # deployments draining after a route change
    background: set[asyncio.Task[None]] = field(default_factory=set)  # shadow mirrors, lockout reports
    shadow_running: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))  # mirrors per route


@dataclass
class AppState:
    settings: Settings
    db: DbEngine
    governance: Governance
    routing: Routing
    observe: Observe
    caches: Caches = field(default_factory=Caches)
    tasks: Tasks = field(default_factory=Tasks)
    new_id: RequestIds = field(default_factory=RequestIds)
    started_at: float = field(default_factory=time.time)
    files: FileStore | None = None  # OpenAI Files (``files``)
    data: DataService | None = None  # datasets, pipelines, lineage (``data``)
    vector_stores: Any = None  # gateway.vector_stores.VectorStores: OpenAI vector stores over RAG collections
