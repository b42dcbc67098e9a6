"""Admin API for routes: inspect them and change their deployments at run time, without a restart.

Every change is validated like the config file, applied atomically to the router (requests in flight
finish on what they started with; removed engines are closed once drained), recorded in the audit trail
(who, when, before/after) and survives restarts (see ``routing.changes``).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from strata.config.references import mask
from strata.engines.base import Engine
from strata.engines.registry import build_engine
from strata.errors import ConfigError, InvalidRequest, NotFound
from strata.gateway.admin import guarded
from strata.gateway.http import read_json
from strata.gateway.schemas import validate
from strata.gateway.shadow import report
from strata.gateway.state import AppState
from strata.governance.secrets import dump_secrets
from strata.observe.usage import parse_window
from strata.pipeline.internal import embedder
from strata.registry.resolve import resolved
from strata.routing.answer_drift import check_config as check_answer_drift
from strata.routing.changes import apply_overrides
from strata.routing.config import CanaryConfig, DeploymentConfig, RouteConfig
from strata.routing.router import Deployment

log = logging.getLogger(__name__)


def route_view(state: AppState, cfg: RouteConfig) -> dict[str, Any]:
    out = dump_secrets(cfg, lambda _, value: mask(value))  # an upstream key as env:NAME, sk-...abcd or ***
    for d in out["deployments"]:
        rt = state.routing.router.deployments.get(d["name"])
        h = state.routing.health.get(d["name"])
        d["status"] = {"breaker": rt.breaker.state if rt else None, "in_flight": rt.outstanding if rt else 0,
                       "ready": h.ready if h else None, "engine_state": h.state if h else None}
    return out


def _route(state: AppState, name: str) -> RouteConfig:
    cfg = state.routing.router.routes.get(name)
    if cfg is None:
        raise NotFound(f"no route named {name!r}", param="route", code="route_not_found")
    return cfg


async def list_routes(state: AppState, request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [route_view(state, r) for r in state.routing.router.routes.values()]}


async def show_route(state: AppState, request: Request) -> dict[str, Any]:
    return route_view(state, _route(state, request.path_params["route"]))


async def route_changes(state: AppState, request: Request) -> dict[str, Any]:
    name = request.path_params["route"]
    return {"object": "list", "data": await asyncio.to_thread(state.routing.route_changes.history, name)}


async def patch_route(state: AppState, request: Request) -> dict[str, Any]:
    """Change route-level settings (balancer, retries, breaker, canary, shadow, complexity…) at run time.

    The body is a partial route config, merged one level deep into nested settings: ``{"canary":
    {"max_ttft_ratio": 3}}`` keeps the other canary settings. Deployments change through their own path.
    """
    old = _route(state, request.path_params["route"])
    body = await read_json(request, 64 * 1024)
    for field in ("name", "deployments"):
        if field in body:
            raise InvalidRequest(f"{field!r} cannot be patched here; use the deployments endpoints", param=field)
    merged = old.model_dump()
    for key, value in body.items():
        merged[key] = {**merged[key], **value} if isinstance(merged.get(key), dict) and isinstance(value, dict) \
            else value
    new = validate(RouteConfig, merged)
    return await apply_change(state, actor_of(request), old, new, "update_route")


async def put_deployment(state: AppState, request: Request) -> dict[str, Any]:
    name, dep_name = request.path_params["route"], request.path_params["deployment"]
    body = await read_json(request, 64 * 1024)
    body.setdefault("name", dep_name)
    dep = validate(DeploymentConfig, body)
    if dep.name != dep_name:
        raise InvalidRequest("deployment name in the body differs from the URL", param="name")
    owner = state.routing.router.owner_of(dep_name)
    if owner not in (None, name):
        raise InvalidRequest(f"deployment {dep_name!r} already belongs to route {owner!r}", param="name")
    old = state.routing.router.routes.get(name)
    deps = [d.model_dump() for d in old.deployments] if old else []
    index = next((i for i, d in enumerate(deps) if d["name"] == dep_name), len(deps))
    deps[index:index + 1] = [dep.model_dump()]
    base = old.model_dump() if old else {"name": name}
    new = validate(RouteConfig, {**base, "deployments": deps})
    action = "update_deployment" if old and any(d.name == dep_name for d in old.deployments) else "add_deployment"
    return await apply_change(state, actor_of(request), old, new, action)


async def delete_deployment(state: AppState, request: Request) -> dict[str, Any]:
    name, dep_name = request.path_params["route"], request.path_params["deployment"]
    old = _route(state, name)
    if not any(d.name == dep_name for d in old.deployments):
        raise NotFound(f"route {name!r} has no deployment {dep_name!r}", param="deployment")
    deps = [d.model_dump() for d in old.deployments if d.name != dep_name]
    if not any(d["role"] == "primary" for d in deps):
        raise InvalidRequest(f"route {name!r} must keep at least one primary deployment", param="deployment")
    new = validate(RouteConfig, {**old.model_dump(), "deployments": deps})
    return await apply_change(state, actor_of(request), old, new, "remove_deployment")


async def reset_route(state: AppState, request: Request) -> dict[str, Any]:
    name = request.path_params["route"]
    old = _route(state, name)
    original = next((r for r in state.settings.routes if r.name == name), None)
    if original is None:
        raise InvalidRequest(f"route {name!r} is not in the config file; remove its deployments instead")
    return await apply_change(state, actor_of(request), old, original, "reset", record_after=False)


def actor_of(request: Request) -> str:
    key_id: str = request.state.principal.key_id
    return key_id


async def start_rollout(state: AppState, request: Request) -> dict[str, Any]:
    """Start a canary or a shadow: a new deployment like the primary, with another model or engine."""
    role = request.url.path.rsplit("/", 1)[-1]
    old = _route(state, request.path_params["route"])
    if (current := old.deployment(role)) is not None:
        what = "promote or roll it back" if role == "canary" else "remove it"
        raise InvalidRequest(f"route {old.name!r} already has a {role} ({current.name}); {what} first",
                             param="route", code=f"{role}_exists")
    body = await read_json(request, 64 * 1024)
    primary = next(d for d in old.deployments if d.role == "primary")
    dep = primary.model_dump(exclude={"name", "role", "weight", "traffic"})
    engine = body.get("engine") or {}
    if not isinstance(engine, dict):
        raise InvalidRequest("`engine` must be an object of engine settings, e.g. {\"model\": \"…\"}", param="engine")
    dep["engine"] = {**dep["engine"], **engine}
    if body.get("model"):
        dep["engine"]["model"] = body["model"]
    if "price" in body:
        dep["price"] = body["price"]
    name = body.get("name") or _free_name(state, f"{old.name}-{role}")
    steps = body.get("steps")
    traffic = body.get("traffic") or (steps[0] if steps else None)
    if traffic is None:
        raise InvalidRequest(f"a {role} needs `traffic` (a percentage)", param="traffic")
    owner = state.routing.router.owner_of(name)
    if owner is not None:
        raise InvalidRequest(f"deployment {name!r} already exists in route {owner!r}", param="name")
    dep |= {"name": name, "role": role, "traffic": traffic, "canary": _rollout_settings(role, body)}
    new_dep = validate(DeploymentConfig, dep)
    if role == "canary":
        await state.routing.rollouts.gate(old, new_dep, "start", actor_of(request))
    base = old.model_dump()
    new = validate(RouteConfig, {**base, "deployments": [*base["deployments"], new_dep.model_dump()]})
    return await apply_change(state, actor_of(request), old, new, f"start_{role}",
                              reason=body.get("reason") or f"{role} {name} at {traffic:g}%")


def _rollout_settings(role: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """``steps`` and ``canary`` of a start request: settings of this rollout only, kept on the canary
    deployment (the route's own ``canary`` settings stay as they are, for the next rollout)."""
    given = body.get("canary") or {}
    if not isinstance(given, dict):
        raise InvalidRequest("`canary` must be an object of canary settings, e.g. {\"max_ttft_ratio\": 3}",
                             param="canary")
    if unknown := sorted(set(given) - set(CanaryConfig.model_fields)):
        raise InvalidRequest(f"unknown canary setting {unknown[0]!r}; the settings are "
                             f"{', '.join(CanaryConfig.model_fields)}", param="canary")
    settings = {**given, **({"steps": body["steps"]} if body.get("steps") else {})}
    if settings and role != "canary":
        raise InvalidRequest(f"`steps` and `canary` settings are for a canary, not a {role}",
                             param="steps" if "steps" in settings else "canary")
    return settings or None


def _free_name(state: AppState, base: str) -> str:
    """``base``, or ``base-2``, ``base-3``… when a promoted canary already carries the name."""
    n = 1
    name = base
    while state.routing.router.owner_of(name) is not None:
        n += 1
        name = f"{base}-{n}"
    return name


async def promote(state: AppState, request: Request) -> dict[str, Any]:
    name = request.path_params["route"]
    await state.routing.rollouts.promote(name, actor_of(request), await _reason(request, "promoted by operator"))
    return {"route": route_view(state, _route(state, name))}


async def rollback(state: AppState, request: Request) -> dict[str, Any]:
    name = request.path_params["route"]
    await state.routing.rollouts.rollback(name, actor_of(request), await _reason(request, "rolled back by operator"))
    return {"route": route_view(state, _route(state, name))}


async def _reason(request: Request, default: str) -> str:
    body = await read_json(request, 16 * 1024) if await request.body() else {}
    reason = body.get("reason") if isinstance(body, dict) else None
    return str(reason) if reason else default


async def rollout_status(state: AppState, request: Request) -> dict[str, Any]:
    name = _route(state, request.path_params["route"]).name
    events = await asyncio.to_thread(state.observe.events.list, None, name, 20)
    return {"route": name, "rollout": state.routing.rollouts.status(name), "events": events}


async def shadow_report(state: AppState, request: Request) -> dict[str, Any]:
    name = _route(state, request.path_params["route"]).name
    since = request.query_params.get("since")
    try:
        window = parse_window(since) if since else None
        if window is not None:
            datetime.now(UTC) - window  # "1000000d" parses but reaches before year 1
    except OverflowError:
        raise InvalidRequest(f"window {since!r} is too long", param="since") from None
    return await asyncio.to_thread(report, state.db, name, window)


async def list_events(state: AppState, request: Request) -> dict[str, Any]:
    q = request.query_params
    data = await asyncio.to_thread(state.observe.events.list, q.get("kind"), q.get("subject"), 100)
    return {"object": "list", "data": data}


async def apply_change(state: AppState, actor: str, old: RouteConfig | None, new: RouteConfig,
                       action: str, record_after: bool = True, reason: str | None = None) -> dict[str, Any]:
    """Swap the route in (see ``swap``) and record the change in the audit trail."""
    async with state.routing.route_lock:  # ``follow`` must not see the swap before the record
        await swap(state, old, new)
        change = await asyncio.to_thread(state.routing.route_changes.record, new.name, action, actor, old,
                                         new if record_after else None, reason)
    await state.observe.audit.record(actor, f"route.{action}", new.name,
                                     {"change": change["id"], "reason": reason, "before": _summary(old),
                                      "after": _summary(new)})
    log.info("route %s: %s by %s", new.name, action, actor)
    return {"route": route_view(state, new), "change": change}


def _summary(cfg: RouteConfig | None) -> dict[str, Any] | None:
    """A route's deployments in the audit log: what serves, at what share (the full configs are in the
    route's changes, whose entry id this names)."""
    if cfg is None:
        return None
    return {d.name: {"role": d.role, "traffic": d.traffic, "model": getattr(d.engine, "model", None)}
            for d in cfg.deployments}


async def follow(state: AppState) -> None:
    """One pass of the route-follow loop (every ``keys.sync_interval``): apply route changes recorded by other
    replicas sharing the database. A bad pass (database away, an engine that cannot start) raises; the loop
    runner logs it and the next pass retries."""
    latest = await asyncio.to_thread(state.routing.route_changes.version)
    if latest == state.routing.seen_change:
        return
    async with state.routing.route_lock:
        overrides = await asyncio.to_thread(state.routing.route_changes.overrides)
        for route in apply_overrides(state.settings.routes, overrides):
            current = state.routing.router.routes.get(route.name)
            if current != route:
                await swap(state, current, route)
                log.info("route %s: followed a change made through another replica", route.name)
        state.routing.seen_change = latest


async def swap(state: AppState, old: RouteConfig | None, new: RouteConfig) -> None:
    """Build and start engines for new or changed deployments, swap the route in, drain the rest."""
    before = {d.name: d for d in old.deployments} if old else {}
    engines: dict[str, Engine] = {}
    if new.quality is not None and state.observe.quality is not None:  # a scorer, judge or rubric that exists
        others = [r for r in state.routing.router.routes.values() if r.name != new.name]
        try:
            state.observe.quality.check([*others, new])
        except ConfigError as exc:
            raise InvalidRequest(exc.message, param="quality") from None
    try:  # a canary answer-drift limit needs the route's answers sampled
        check_answer_drift(state.settings.drift, [new])
    except ConfigError as exc:
        raise InvalidRequest(exc.message, param="canary") from None
    try:
        for d in new.deployments:
            if d.name not in before or before[d.name].engine != d.engine:
                serving = resolved(state.db, d)  # a registry:NAME@ALIAS model: the version it names now
                if d.name in before and resolved(state.db, before[d.name]).engine == serving.engine:
                    continue  # another name for the same version (a promoted canary following its alias again)
                engines[d.name] = build_engine(serving, state.settings)
    except ConfigError as exc:
        raise InvalidRequest(exc.message, param="engine") from None
    for engine in engines.values():
        await engine.start()
    state.routing.engines.update(engines)
    removed = state.routing.router.replace_route(new, engines)
    state.routing.rollouts.sync()
    state.routing.refresh_scorers(partial(embedder, state))
    for dep in removed:
        state.tasks.drains.append(asyncio.create_task(_drain(state, dep), name=f"drain-{dep.cfg.name}"))


async def _drain(state: AppState, dep: Deployment) -> None:
    """Close a replaced engine once its in-flight requests are done (bounded by graceful_timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + state.settings.server.graceful_timeout
    while dep.outstanding > 0 and loop.time() < deadline:
        await asyncio.sleep(0.1)
    if state.routing.engines.get(dep.cfg.name) is dep.engine:
        del state.routing.engines[dep.cfg.name]
        state.routing.health.pop(dep.cfg.name, None)
    await dep.engine.close()


routes = [
    Route("/admin/routes", guarded(list_routes), methods=["GET"]),
    Route("/admin/routes/{route}", guarded(show_route), methods=["GET"]),
    Route("/admin/routes/{route}", guarded(patch_route), methods=["PATCH"]),
    Route("/admin/routes/{route}/changes", guarded(route_changes), methods=["GET"]),
    Route("/admin/routes/{route}/reset", guarded(reset_route), methods=["POST"]),
    Route("/admin/routes/{route}/deployments/{deployment}", guarded(put_deployment), methods=["PUT"]),
    Route("/admin/routes/{route}/deployments/{deployment}", guarded(delete_deployment), methods=["DELETE"]),
    Route("/admin/routes/{route}/canary", guarded(start_rollout), methods=["POST"]),
    Route("/admin/routes/{route}/shadow", guarded(start_rollout), methods=["POST"]),
    Route("/admin/routes/{route}/promote", guarded(promote), methods=["POST"]),
    Route("/admin/routes/{route}/rollback", guarded(rollback), methods=["POST"]),
    Route("/admin/routes/{route}/rollout", guarded(rollout_status), methods=["GET"]),
    Route("/admin/routes/{route}/shadow", guarded(shadow_report), methods=["GET"]),
    Route("/admin/events", guarded(list_events), methods=["GET"]),
]
