"""The application state: everything the gateway holds, built once in ``create_app``."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from sqlalchemy import Engine as DbEngine

from strata.config.settings import Settings
from strata.engines.base import Engine, EngineHealth
from strata.gateway.context import RequestIds
from strata.governance.auth import Authenticator
from strata.governance.keys import KeyStore
from strata.observe.ledger import LedgerWriter
from strata.observe.metrics import Metrics
from strata.routing.changes import RouteChangeStore
from strata.routing.router import Router


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
    new_id: RequestIds = field(default_factory=RequestIds)
    started_at: float = field(default_factory=time.time)
    health: dict[str, EngineHealth] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
