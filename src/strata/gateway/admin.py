"""Admin API (admin keys only): keys and usage. The CLI calls the same service functions."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strata.errors import PermissionDenied, StrataError
from strata.gateway.http import error_response, json_response, read_json, request_id_of
from strata.gateway.schemas import validate
from strata.gateway.state import AppState
from strata.governance.keys import Principal, check_routes, hash_key
from strata.observe.costs import cost_report
from strata.observe.usage import usage_report

log = logging.getLogger(__name__)


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    team: str = Field("default", min_length=1, max_length=200)
    allowed_routes: list[str] | None = None
    expires_in_days: float | None = Field(None, gt=0, le=36500)  # beyond, the expiry date overflows
    admin: bool = False


def key_view(p: Principal, created_at: datetime | None = None, prefix: str | None = None) -> dict[str, Any]:
    return {
        "id": p.key_id, "name": p.name, "team": p.team, "prefix": prefix,
        "allowed_routes": sorted(p.allowed_routes) if p.allowed_routes is not None else None,
        "admin": p.is_admin, "revoked": p.revoked,
        "created_at": created_at.isoformat() if created_at else None,
        "expires_at": p.expires_at.isoformat() if p.expires_at else None,
    }


async def _admin(request: Request) -> tuple[AppState, str]:
    state: AppState = request.app.state.strata
    rid = request_id_of(request, state.new_id)
    principal = await state.auth.authenticate(request.headers.get("authorization"))
    if not principal.is_admin:
        raise PermissionDenied("This endpoint needs an admin key.", code="admin_required")
    request.state.principal = principal
    return state, rid


def guarded(handler: Any) -> Any:
    async def endpoint(request: Request) -> Response:
        try:
            state, rid = await _admin(request)
            return json_response(await handler(state, request), rid)
        except StrataError as exc:
            return error_response(exc)
        except Exception:
            log.exception("admin endpoint %s failed", request.url.path)
            return error_response(StrataError("Internal error in the admin API."))
    return endpoint


async def create_key(state: AppState, request: Request) -> dict[str, Any]:
    req: CreateKey = validate(CreateKey, await read_json(request, 64 * 1024))
    expires = datetime.now(UTC) + timedelta(days=req.expires_in_days) if req.expires_in_days else None
    check_routes(req.allowed_routes, list(state.router.routes))
    created = await asyncio.to_thread(state.keys.create, req.name, req.team, req.allowed_routes, expires,
                                      req.admin)
    state.auth.apply(hash_key(created.secret), created.principal)
    return {**key_view(created.principal, datetime.now(UTC), created.secret[:14]), "key": created.secret}


async def list_keys(state: AppState, request: Request) -> dict[str, Any]:
    rows = await asyncio.to_thread(state.keys.list)
    return {"object": "list", "data": [key_view(p, row.created_at, row.prefix) for row, p in rows]}


async def revoke_key(state: AppState, request: Request) -> dict[str, Any]:
    principal = await asyncio.to_thread(state.keys.revoke, request.path_params["key_id"])
    await asyncio.to_thread(state.auth.sync)
    return key_view(principal)


async def usage(state: AppState, request: Request) -> dict[str, Any]:
    by = request.query_params.get("by", "team")
    since = request.query_params.get("since", "7d")
    return await asyncio.to_thread(usage_report, state.db, by, since)


async def cost(state: AppState, request: Request) -> dict[str, Any]:
    by = request.query_params.get("by", "team")
    since = request.query_params.get("since", "30d")
    return await asyncio.to_thread(cost_report, state.db, by, since)


async def engines(state: AppState, request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    throttled = state.callers.throttled()
    for name, h in list(state.health.items()):
        dep = state.router.deployments.get(name)
        route = state.router.routes.get(state.router.owner_of(name) or "")
        if dep is None or route is None:
            continue
        out[name] = {"ready": h.ready, "state": h.state, "detail": h.detail, "busy_slots": h.busy_slots,
                     "queue_depth": h.queue_depth, "restarts": h.restarts, "breaker": dep.breaker.state,
                     "ejections": dep.breaker.ejections, "in_flight": dep.outstanding,
                     "panic": state.router.in_panic(route), "throttled_keys": throttled.get(route.name, {}),
                     **h.extra}
    return out


routes = [
    Route("/admin/keys", guarded(create_key), methods=["POST"]),
    Route("/admin/keys", guarded(list_keys), methods=["GET"]),
    Route("/admin/keys/{key_id}", guarded(revoke_key), methods=["DELETE"]),
    Route("/admin/usage", guarded(usage), methods=["GET"]),
    Route("/admin/cost", guarded(cost), methods=["GET"]),
    Route("/admin/engines", guarded(engines), methods=["GET"]),
]
