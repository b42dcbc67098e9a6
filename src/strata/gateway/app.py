"""Building the gateway application: ``create_app(settings)`` wires state; the lifespan runs it.

Startup order: database (migrated) -> keys -> ledger writer (replaying the journals of crashed processes)
-> engines (local workers start in the background, LLMs first) -> control loops. Shutdown runs after
uvicorn has finished in-flight requests: loops stop, the ledger drains (no row is lost), engines stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
from collections.abc import AsyncIterator, Callable

from sqlalchemy import Engine as DbEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from strata.app.loops import LoopRunner
from strata.config.settings import Settings
from strata.engines.base import Engine, EngineHealth
from strata.engines.registry import build_engine
from strata.errors import ConfigError, InternalError, InvalidRequest, NotFound, StrataError
from strata.gateway import (
    admin,
    audit_admin,
    feedback_api,
    health,
    openai_api,
    openapi,
    policies_admin,
    responses,
    routes_admin,
    traces_admin,
)
from strata.gateway.http import REQUEST_ID, error_response, request_id_of
from strata.gateway.monitor import control_loops
from strata.gateway.state import AppState
from strata.governance.abuse import AuthLockout
from strata.governance.auth import Authenticator
from strata.governance.governor import Governor
from strata.governance.keys import KeyStore
from strata.governance.policies import PolicyStore
from strata.governance.secrets import Keyring, SecretStore
from strata.observe.audit import audit_log
from strata.observe.events import EventStore
from strata.observe.journal import Journal
from strata.observe.ledger import LedgerWriter
from strata.observe.metrics import Metrics
from strata.observe.tracing import TraceExporter, Tracer, TraceSink
from strata.routing.breaker import CLOSED
from strata.routing.changes import RouteChangeStore, apply_overrides
from strata.routing.config import RouteConfig
from strata.routing.rollout import Rollouts
from strata.routing.router import Router
from strata.state.shared import SharedState
from strata.store.db import open_database

log = logging.getLogger(__name__)


def build_state(settings: Settings) -> AppState:
    """Everything that can fail on bad config fails here, before the server binds its port."""
    db = open_database(settings.database_url)
    secrets = SecretStore(db, Keyring.at_start(settings.secrets, settings.data_dir))
    route_changes = RouteChangeStore(db, secrets)
    routes = apply_overrides(settings.routes, route_changes.overrides())
    engines: dict[str, Engine] = {d.name: build_engine(d, settings) for r in routes for d in r.deployments}
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
    state = AppState(settings=settings, db=db, keys=keys, auth=auth, metrics=metrics, ledger=ledger,
                     router=router, engines=engines, health=health, route_changes=route_changes, events=events,
                     rollouts=rollouts, shared=shared, policies=policies,
                     governor=Governor(shared, policies, db, events.emit), tracer=_tracer(settings, db, metrics),
                     audit=audit)

    async def apply(old: RouteConfig, new: RouteConfig, action: str, actor: str, reason: str) -> None:
        await routes_admin.apply_change(state, actor, old, new, action, reason=reason)

    rollouts.apply = apply
    auth.lockout = AuthLockout(settings.abuse, _lockout_reporter(state))
    state.refresh_scorers()
    state.seen_change = route_changes.version()
    return state


def _lockout_reporter(state: AppState) -> Callable[[str, int], None]:
    """An IP locked out for key guessing (``governance.abuse``): a warning, a metric, an ``auth.lockout`` audit
    entry and an ``auth_lockout`` operator event, written off the event loop."""
    cfg = state.settings.abuse

    def report(ip: str, failures: int) -> None:
        message = (f"{failures} failed authentications within {cfg.auth_window:g}s: every request from {ip} "
                   f"gets 429 for {cfg.auth_lockout:g}s")
        log.warning("auth lockout: %s", message)
        state.metrics.limited.labels("ip", "auth_failures").inc()
        data = {"ip": ip, "failures": failures, "lockout_s": cfg.auth_lockout}

        async def record() -> None:
            await state.audit.record("gateway", "auth.lockout", ip, data)
            await asyncio.to_thread(state.events.emit, "auth_lockout", ip, message, data)

        task = asyncio.get_running_loop().create_task(record())
        state.background.add(task)
        task.add_done_callback(state.background.discard)

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


def create_app(settings: Settings, state: AppState | None = None) -> Starlette:
    state = state or build_state(settings)
    loops = LoopRunner(state.metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await _startup(state, loops)
        try:
            yield
        finally:
            await _shutdown(state, loops)

    app = Gateway(
        routes=[*openai_api.routes, *responses.routes, *feedback_api.routes, *admin.routes, *routes_admin.routes,
                *policies_admin.routes, *traces_admin.routes, *audit_admin.routes, *health.routes, *openapi.routes],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, StrataError: _strata_error,  # type: ignore[dict-item]
                            Exception: _internal_error},
    )
    app.state.strata = state
    app.state.traces = state.tracer.store  # GET /admin/traces (None: tracing.store is off)
    app.state.loops = loops  # the control-loop runner (``strata.app.loops``)
    app.state.openapi = openapi.render(app.routes)  # once, from the routes served
    return app


class Gateway(Starlette):
    """Starlette, with the inference endpoints dispatched straight from the ASGI call.

    The hot path skips the generic middleware stack and router (measured: ~10% of gateway CPU per
    request); every other path goes through Starlette as usual.
    """

    FAST = {**{f"/v1{p}": e for p, e in openai_api.FAST_PATHS.items()}, "/v1/responses": responses.create_response}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.FAST.get(scope["path"])
            if endpoint is not None:
                scope["app"] = self
                try:
                    response = await endpoint(Request(scope, receive))
                except Exception:
                    log.exception("unhandled error on %s", scope["path"])
                    response = error_response(InternalError("Internal error in the gateway."),
                                              request_id_of(Request(scope), self.state.strata.new_id))
                await response(scope, receive, send)
                return
        if scope["type"] == "http":
            send = _with_request_id(scope, send, self.state.strata.new_id)
        await super().__call__(scope, receive, send)


def _with_request_id(scope: Scope, send: Send, new_id: Callable[[], str]) -> Send:
    """Every response carries X-Request-Id: the client's (if well-formed) or a fresh one."""
    given = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-request-id"), None)
    rid = (given if given and REQUEST_ID.match(given) else new_id()).encode()

    async def send_with_id(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
            message["headers"] = [*headers, (b"x-request-id", rid)]
        await send(message)

    return send_with_id


async def _startup(state: AppState, loops: LoopRunner) -> None:
    state.ledger.start()
    if state.tracer.exporter is not None:
        state.tracer.exporter.start()
    for loop in control_loops(state):  # engine start, health, key/policy/route sync, canaries, cost alerts
        loops.start(loop)
    gc.collect()
    gc.freeze()  # startup objects (modules, config, tables) never become garbage: keep them out of GC passes


async def _shutdown(state: AppState, loops: LoopRunner) -> None:
    await loops.stop()
    for task in [*state.tasks, *state.background]:
        task.cancel()
    await asyncio.gather(*state.tasks, *state.background, return_exceptions=True)
    await asyncio.gather(*state.settling, return_exceptions=True)  # budgets settle before we stop
    await state.shared.close()
    await state.ledger.close()
    if state.tracer.exporter is not None:
        await asyncio.to_thread(state.tracer.exporter.close)  # the traces of the last requests go out too
    await asyncio.gather(*(e.close() for e in state.engines.values()), return_exceptions=True)
    state.db.dispose()
    log.info("stopped: ledger drained, engines closed")


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return error_response(NotFound(f"Unknown path {request.url.path}", code="unknown_url"))
    if exc.status_code == 405:
        err = InvalidRequest(f"Method {request.method} not allowed on {request.url.path}", code="method_not_allowed")
        err.status = 405
        return error_response(err)
    err = InvalidRequest(str(exc.detail))
    err.status = exc.status_code
    return error_response(err)


async def _strata_error(request: Request, exc: StrataError) -> Response:
    return error_response(exc, request.headers.get("x-request-id"))


async def _internal_error(request: Request, exc: Exception) -> Response:
    """Any other exception off the fast path: OpenAI's error shape (Starlette logs the traceback)."""
    return error_response(InternalError("Internal error in the gateway."))
