"""Wiring the gateway: ``build_state(settings)`` builds every service from the config; ``create_app`` puts
the state, the lifespan and the HTTP surface (``strata.gateway.app``) together.

Everything that can fail on bad config fails in ``build_state``, before the server binds its port.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from sqlalchemy import Engine as DbEngine
from starlette.applications import Starlette

from strata.app.lifespan import lifespan
from strata.app.loops import LoopRunner
from strata.config.settings import Settings
from strata.data.service import DataService
from strata.engines.base import Engine, EngineHealth
from strata.engines.registry import build_engine
from strata.errors import ConfigError
from strata.evals.gates import Gates
from strata.files.store import FileStore
from strata.files.vector_stores import VectorStores
from strata.gateway import routes_admin
from strata.gateway.app import gateway
from strata.gateway.state import AppState
from strata.governance.abuse import AuthLockout
from strata.governance.auth import Authenticator
from strata.governance.governor import Governor
from strata.governance.keys import KeyStore, Principal
from strata.governance.policies import PolicyStore
from strata.governance.secrets import Keyring, SecretStore
from strata.governance.service import Governance
from strata.observe.alerts import AlertForwarder, resolve_headers
from strata.observe.audit import audit_log
from strata.observe.events import EventStore
from strata.observe.journal import Journal
from strata.observe.ledger import LedgerWriter
from strata.observe.metrics import Metrics
from strata.observe.metrics_export import Deployments, MetricsExporter, resolve_metrics_endpoint
from strata.observe.quality.sampler import QualitySampler
from strata.observe.service import Observe
from strata.observe.tracing import TraceExporter, Tracer, TraceSink
from strata.pipeline.internal import embedder
from strata.pipeline.record import CallRecord
from strata.registry import rollout as registry_rollout
from strata.registry.resolve import resolved
from strata.registry.store import BUNDLED_MODELS, RegistryStore
from strata.routing.answer_drift import check_config as check_answer_drift
from strata.routing.breaker import CLOSED
from strata.routing.changes import RouteChangeStore, apply_overrides
from strata.routing.config import RouteConfig
from strata.routing.rollout import Rollouts
from strata.routing.router import Router
from strata.routing.service import Routing
from strata.state.shared import SharedState
from strata.store.db import open_database

log = logging.getLogger(__name__)


def create_app(settings: Settings, state: AppState | None = None) -> Starlette:
    state = state or build_state(settings)
    loops = LoopRunner(state.observe.metrics)
    return gateway(state, lifespan(state, loops), loops)


def build_state(settings: Settings) -> AppState:
    """Everything that can fail on bad config fails here, before the server binds its port."""
    db = open_database(settings.database_url)
    secrets = SecretStore(db, Keyring.at_start(settings.secrets, settings.data_dir))
    route_changes = RouteChangeStore(db, secrets)
    routes = apply_overrides(settings.routes, route_changes.overrides())
    if settings.registry.register_bundled:
        RegistryStore(db).register_bundled(BUNDLED_MODELS)
    engines: dict[str, Engine] = {d.name: build_engine(resolved(db, d), settings) for r in routes
                                  for d in r.deployments}
    keys = KeyStore(db)
    admin_secret = settings.admin_key.get_secret_value() if settings.admin_key else None
    auth = Authenticator(keys, admin_secret)
    auth.load()
    metrics = Metrics()
    ledger = LedgerWriter(db, metrics, flush_interval=settings.ledger.flush_interval,
                          batch_size=settings.ledger.batch_size,
                          spill_path=settings.data_dir / "ledger-spill.jsonl", journal=_journal(settings))
    health: dict[str, EngineHealth] = {}
    router = Router(routes, engines, health)
    events = EventStore(db, metrics)
    rollouts = Rollouts(lambda: router.routes, _not_ready, events.emit,
                        ejected=lambda name: _ejected(router, name))
    shared = SharedState(settings.state, metrics)
    audit = audit_log(settings, db)
    audit.start_signing()
    policies = PolicyStore(db, settings.limits, settings.budgets, audit)
    policies.load()
    governance = Governance(keys=keys, auth=auth, policies=policies,
                            governor=Governor(shared, policies, db, events.emit), shared=shared)
    observe = Observe(metrics=metrics, ledger=ledger, events=events, audit=audit,
                      tracer=_tracer(settings, db, metrics), alerts=_alerts(settings, events, secrets, metrics))
    routing = Routing(router=router, engines=engines, route_changes=route_changes, rollouts=rollouts, health=health)
    observe.metrics_exporter = _metrics_exporter(settings, metrics, lambda: {
        d.name: (r.name, routing.engines.get(d.name)) for r in router.routes.values() for d in r.deployments})
    state = AppState(settings=settings, db=db, governance=governance, routing=routing, observe=observe,
                     files=FileStore(db, settings.files, settings.data_dir),
                     data=DataService(db, settings.data, settings.data_dir))

    async def apply(old: RouteConfig, new: RouteConfig, action: str, actor: str, reason: str) -> None:
        new = await registry_rollout.on_route_change(state, old, new, action, actor)  # alias moves on promotion
        await routes_admin.apply_change(state, actor, old, new, action, reason=reason)

    rollouts.apply = apply
    rollouts.gate = Gates(settings.evals.gates, db, audit).on_rollout
    auth.lockout = AuthLockout(settings.abuse, _lockout_reporter(state))
    routing.refresh_scorers(partial(embedder, state))
    routing.seen_change = route_changes.version()
    state.vector_stores = _vector_stores(state)
    observe.quality = QualitySampler(state, settings.quality)
    observe.quality.check(routes)
    if settings.drift.enabled:
        from strata.observe.drift.setup import build_monitor  # numpy/scipy load only when drift is on

        observe.drift = build_monitor(state)
        observe.drift.answered = rollouts.answer
    check_answer_drift(settings.drift, routes)
    return state


def _vector_stores(state: AppState) -> VectorStores:
    """RAG collections (``rag.RagService``, embedding through the ``rag.embeddings_route`` as accounted internal
    calls) behind OpenAI's vector stores; lineage edges in DS's graph (``data.lineage``)."""
    from strata.data.lineage import Lineage
    from strata.rag.service import RagService

    settings = state.settings
    embed = embedder(state, settings.rag.embeddings_route)
    assert embed is not None
    lineage = Lineage(state.db)
    rag = RagService(state.db, settings.rag, settings.data_dir, embed, lineage=lineage,
                     datasets=state.data.store if state.data is not None else None)
    assert state.files is not None

    def spawn(work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        state.tasks.background.add(task)
        task.add_done_callback(state.tasks.background.discard)
        return task

    def ingest_record(team: str, key_id: str | None, file_id: str) -> CallRecord:
        """The parent of a file's embedding calls: their ledger rows are the team's, under ``ingest-<file>``."""
        rec = CallRecord(f"ingest-{file_id}", "vector_stores.files")
        rec.principal = Principal(key_id=key_id or "-", name="ingest", team=team, allowed_routes=None,
                                  is_admin=False)
        return rec

    return VectorStores(state.db, state.files, rag, spawn, ingest_record, lineage)


def _alerts(settings: Settings, events: EventStore, secrets: SecretStore, metrics: Metrics) -> AlertForwarder | None:
    """Operator events forwarded to ``alerts.webhook_url`` (``observe.alerts``); header references resolved now,
    so a missing one stops the start."""
    cfg = settings.alerts
    if not cfg.webhook_url:
        return None
    forwarder = AlertForwarder(cfg, metrics, resolve_headers(cfg, secrets.get))
    events.forward = forwarder.offer
    return forwarder


def _lockout_reporter(state: AppState) -> Callable[[str, int], None]:
    """An IP locked out for key guessing (``governance.abuse``): a warning, a metric, an ``auth.lockout`` audit
    entry and an ``auth_lockout`` operator event, written off the event loop."""
    cfg = state.settings.abuse

    def report(ip: str, failures: int) -> None:
        message = (f"{failures} failed authentications within {cfg.auth_window:g}s: every request from {ip} "
                   f"gets 429 for {cfg.auth_lockout:g}s")
        log.warning("auth lockout: %s", message)
        state.observe.metrics.limited.labels("ip", "auth_failures").inc()
        data = {"ip": ip, "failures": failures, "lockout_s": cfg.auth_lockout}

        async def record() -> None:
            await state.observe.audit.record("gateway", "auth.lockout", ip, data)
            await asyncio.to_thread(state.observe.events.emit, "auth_lockout", ip, message, data)

        task = asyncio.get_running_loop().create_task(record())
        state.tasks.background.add(task)
        task.add_done_callback(state.tasks.background.discard)

    return report


def _tracer(settings: Settings, db: DbEngine, metrics: Metrics) -> Tracer:
    """Tracing (``observe.tracing``): Strata's own trace store and an OTLP exporter, each when configured;
    with neither (or ``tracing.enabled: false``) no request makes a span."""
    cfg = settings.tracing
    sinks: list[TraceSink] = []
    store = None
    if cfg.enabled and cfg.store.enabled:
        from strata.observe.trace_store import TraceStore

        store = TraceStore(cfg.store.max_traces, db if cfg.store.backend == "database" else None)
        sinks.append(store)
    from strata.observe.otlp import OtlpSink, resolve_endpoint  # protobuf and httpx load only when tracing

    endpoint = resolve_endpoint(cfg.otlp, os.environ) if cfg.enabled else None
    if endpoint is not None:
        otlp = cfg.otlp.model_copy(update={"endpoint": endpoint})
        sinks.append(OtlpSink(otlp, cfg.service_name, on_failure=metrics.trace_export_failures.inc))
        log.info("tracing: exporting by OTLP to %s", endpoint)
    if not sinks:
        return Tracer(cfg, None)
    exporter = TraceExporter(sinks, cfg.export_interval, cfg.max_queue, on_drop=metrics.traces_dropped.inc)
    return Tracer(cfg, exporter, store)


def _metrics_exporter(settings: Settings, metrics: Metrics, deployments: Deployments) -> MetricsExporter | None:
    """The OTLP metrics export (``observe.metrics_export``), beside the traces' collector, when there is one."""
    url = resolve_metrics_endpoint(settings.tracing.otlp, os.environ) if settings.metrics.otlp else None
    if url is None:
        return None
    log.info("metrics: exporting by OTLP to %s every %gs", url, settings.metrics.export_interval)
    return MetricsExporter(metrics.registry, url, settings.tracing.otlp, settings.metrics,
                           settings.tracing.service_name, deployments, metrics.metrics_export_failures.inc)


def _journal(settings: Settings) -> Journal | None:
    """The ledger journal (``observe.journal``) in ``<data_dir>/journal``; an unwritable one stops the start."""
    cfg = settings.ledger.journal
    if not cfg.enabled:
        return None
    directory = settings.data_dir.resolve() / "journal"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable")
    except OSError as exc:
        raise ConfigError(f"ledger journal: cannot write {directory}: {exc.strerror} (or set "
                          "ledger.journal.enabled: false)") from None
    return Journal(directory, fsync_interval=cfg.fsync_interval, segment_bytes=cfg.segment_bytes,
                   adopt_interval=cfg.adopt_interval)


def _ejected(router: Router, name: str) -> bool:
    dep = router.deployments.get(name)
    return dep is not None and dep.breaker.state != CLOSED


async def _not_ready(*args: object) -> None:
    raise RuntimeError("rollouts used before the gateway state was built")
