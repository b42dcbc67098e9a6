"""Liveness, readiness and metrics endpoints (no auth: meant for orchestrators and scrapers)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from strata.gateway.state import AppState


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when every local engine is up; remote upstreams are reported but do not gate readiness."""
    state: AppState = request.app.state.strata
    engines = {name: h.state for name, h in state.routing.health.items()}
    local = [h.ready for name, h in state.routing.health.items()
             if name in state.routing.engines and state.routing.engines[name].engine_type != "openai"]
    ready = all(local) and all(name in state.routing.health for name in state.routing.engines)
    return JSONResponse({"status": "ready" if ready else "starting", "engines": engines}, 200 if ready else 503)


async def metrics(request: Request) -> Response:
    state: AppState = request.app.state.strata
    return Response(state.observe.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
