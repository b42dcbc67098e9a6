"""Admin API: keys and usage. The CLI calls the same service functions.

Every admin endpoint is wrapped by ``guarded``, which checks the key's role and scopes against the one
authorisation table (``gateway.authz.RULES``) before the handler runs.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strata.errors import NotFound, PermissionDenied, StrataError
from strata.gateway.authz import authorize
from strata.gateway.http import error_response, json_response, read_json, request_id_of
from strata.gateway.schemas import validate
from strata.gateway.state import AppState
from strata.governance.keys import Principal, check_routes, hash_key
from strata.governance.roles import RANK, Scopes, check_role
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
    role: Literal["admin", "operator", "analyst", "member"] | None = Field(
        None, description="admin, operator, analyst or member (default: admin if admin, else member)")
    scopes: dict[str, list[str]] | None = Field(
        None, description='Confine the key: {"teams": [...], "routes": [...]}; a team-scoped creator\'s own '
                          "scopes are the default and the limit")
    max_concurrency: int | None = Field(None, ge=1, le=100_000, description="Requests in flight at once "
                                        "(per replica); one more gets 429 concurrency_limit")


def key_view(p: Principal, created_at: datetime | None = None, prefix: str | None = None) -> dict[str, Any]:
    return {
        "id": p.key_id, "name": p.name, "team": p.team, "prefix": prefix,
        "allowed_routes": sorted(p.allowed_routes) if p.allowed_routes is not None else None,
        "admin": p.is_admin, "role": p.role, "scopes": p.scopes.to_json(),
        "max_concurrency": p.max_concurrency, "revoked": p.revoked,
        "created_at": created_at.isoformat() if created_at else None,
        "expires_at": p.expires_at.isoformat() if p.expires_at else None,
    }


async def _admin(request: Request) -> tuple[AppState, str]:
    state: AppState = request.app.state.strata
    rid = request_id_of(request, state.new_id)
    principal = await state.governance.auth.authenticate_request(request)
    authorize(principal, request.method, request.url.path, request.path_params)
    request.state.principal = principal
    return state, rid


def principal_of(request: Request) -> Principal:
    """The caller of a ``guarded`` handler (authorised already)."""
    principal: Principal = request.state.principal
    return principal


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
    check_routes(req.allowed_routes, list(state.routing.router.routes))
    role, scopes = grantable(principal_of(request), req)
    check_routes(sorted(scopes.routes or ()), list(state.routing.router.routes))
    created = await asyncio.to_thread(state.governance.keys.create, req.name, req.team, req.allowed_routes, expires,
                                      role=role, scopes=scopes, max_concurrency=req.max_concurrency)
    state.governance.auth.apply(hash_key(created.secret), created.principal)
    await state.observe.audit.record(principal_of(request).key_id, "key.create", created.principal.key_id,
                                     key_view(created.principal))
    return {**key_view(created.principal, datetime.now(UTC), created.secret[:14]), "key": created.secret}


def grantable(creator: Principal, req: CreateKey) -> tuple[str, Scopes]:
    """The role and scopes of a key ``creator`` asks for, refused (403) when beyond its own: a key for a team
    outside its teams, a higher role, or wider scopes. Omitted scopes default to the creator's."""
    role = check_role(req.role or ("admin" if req.admin else "member"))
    if req.admin and role != "admin":
        raise PermissionDenied(f"admin: true contradicts role {role!r}", code="role_conflict")
    asked = Scopes.of(req.scopes)
    scopes = Scopes(asked.teams if asked.teams is not None else creator.scopes.teams,
                    asked.routes if asked.routes is not None else creator.scopes.routes)
    if not creator.scopes.team_ok(req.team):
        raise PermissionDenied(f"This key may create keys only for teams {_names(creator.scopes.teams)}; "
                               f"not {req.team!r}.", code="scope_denied")
    if RANK[role] > RANK[creator.role]:
        raise PermissionDenied(f"A {creator.role} key cannot create a key with the higher role {role!r}.",
                               code="role_denied")
    if not scopes.within(creator.scopes):
        raise PermissionDenied("The new key's scopes would be wider than this key's own.", code="scope_denied")
    return role, scopes


def _names(names: frozenset[str] | None) -> str:
    return ", ".join(sorted(names or ()))


async def list_keys(state: AppState, request: Request) -> dict[str, Any]:
    scopes = principal_of(request).scopes
    rows = await asyncio.to_thread(state.governance.keys.list)
    return {"object": "list", "data": [key_view(p, row.created_at, row.prefix) for row, p in rows
                                       if scopes.team_ok(p.team)]}


async def revoke_key(state: AppState, request: Request) -> dict[str, Any]:
    """Revoke a key; a team-scoped caller sees other teams' keys as missing (404) and cannot revoke a key
    whose role or scopes exceed its own (403)."""
    caller, key_id = principal_of(request), request.path_params["key_id"]
    if caller.scopes.teams is not None:
        target = next((p for _, p in await asyncio.to_thread(state.governance.keys.list) if p.key_id == key_id), None)
        if target is None or not caller.scopes.team_ok(target.team):
            raise NotFound(f"no key with id {key_id!r}", param="key_id", code="key_not_found")
        wider = target.role != "member" and not target.scopes.within(caller.scopes)  # member: inference only
        if RANK[target.role] > RANK[caller.role] or wider:
            raise PermissionDenied("This key cannot revoke a key with a higher role or wider scopes than its own.",
                                   code="role_denied")
    principal = await asyncio.to_thread(state.governance.keys.revoke, key_id)
    await asyncio.to_thread(state.governance.auth.sync)
    await state.observe.audit.record(caller.key_id, "key.revoke", key_id, key_view(principal))
    return key_view(principal)


async def usage(state: AppState, request: Request) -> dict[str, Any]:
    by = request.query_params.get("by", "team")
    since = request.query_params.get("since", "7d")
    return await asyncio.to_thread(usage_report, state.db, by, since, principal_of(request).scopes.teams)


async def cost(state: AppState, request: Request) -> dict[str, Any]:
    by = request.query_params.get("by", "team")
    since = request.query_params.get("since", "30d")
    return await asyncio.to_thread(cost_report, state.db, by, since, None, principal_of(request).scopes.teams)


async def engines(state: AppState, request: Request) -> dict[str, Any]:
    out: dict[str, Any] = {}
    throttled = state.governance.callers.throttled()
    for name, h in list(state.routing.health.items()):
        dep = state.routing.router.deployments.get(name)
        route = state.routing.router.routes.get(state.routing.router.owner_of(name) or "")
        if dep is None or route is None:
            continue
        out[name] = {"ready": h.ready, "state": h.state, "detail": h.detail, "busy_slots": h.busy_slots,
                     "queue_depth": h.queue_depth, "restarts": h.restarts, "breaker": dep.breaker.state,
                     "ejections": dep.breaker.ejections, "in_flight": dep.outstanding,
                     "panic": state.routing.router.in_panic(route), "throttled_keys": throttled.get(route.name, {}),
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
