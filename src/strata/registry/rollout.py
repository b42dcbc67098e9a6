"""Moving an alias: audited, gated, and rolled out through the routes that follow it.

A route follows an alias when one of its deployments has ``model: registry:NAME@ALIAS``. Moving the alias:

- runs the eval gates on the alias (``evals.gates`` with ``model: NAME@ALIAS``, stage ``start``);
- on a following route with a canary plan (``canary.steps``), starts a canary serving the new version
  (``registry:NAME@N``, pinned) and leaves the alias where it is with the new version ``pending``; the canary
  machinery steps it up (each step gated) and the alias moves when it is promoted (``on_route_change``); a
  rollback clears ``pending``;
- on a following route without one (or when no route follows it), moves the alias at once and rebuilds the
  following deployments' engines on the new version.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from strata.errors import InvalidRequest
from strata.evals.gates import Gates
from strata.registry.resolve import follows, reference, routes_following
from strata.registry.store import PREFIX, RegistryStore, parse_ref
from strata.routing.config import DeploymentConfig, RouteConfig

if TYPE_CHECKING:
    from strata.gateway.state import AppState

log = logging.getLogger(__name__)


def gates_of(state: AppState) -> Gates:
    return Gates(state.settings.evals.gates, state.db, state.observe.audit)


async def move_alias(state: AppState, model: str, alias: str, version: int, actor: str,
                     reason: str | None = None) -> dict[str, Any]:
    from strata.gateway import routes_admin

    store = RegistryStore(state.db)
    current = await asyncio.to_thread(store.alias, model, alias)
    target = await asyncio.to_thread(store.version, model, str(version))
    if current is not None and current["pending"] is not None:
        raise InvalidRequest(f"{model}@{alias} is already rolling out version {current['pending']}: promote or roll "
                             "back that canary first", param="alias", code="alias_rollout_in_progress")
    routes = list(state.routing.router.routes.values())
    following = routes_following(routes, model, alias)
    if current is not None and current["version"] != version:
        baselines = [f"{PREFIX}{model}@{current['version']}"]
        await gates_of(state).check(gates_of(state).for_alias(model, alias), "start", f"{model}@{alias}",
                                    [f"{PREFIX}{target['ref']}"], baselines, actor)
    canaried = [r for r in following if r.canary.steps] if current is not None else []
    detail = {"from": current["version"] if current else None, "to": version, "reason": reason,
              "routes": [r.name for r in following]}
    if current is not None and current["version"] == version:
        return {"alias": current, "rollouts": [], "rebuilt": []}
    if canaried:
        if busy := [r.name for r in canaried if r.deployment("canary") is not None]:
            raise InvalidRequest(f"route {busy[0]} already has a canary; promote or roll it back first",
                                 param="alias", code="canary_exists")
        view = await asyncio.to_thread(store.set_alias, model, alias, version, actor, pending=True,
                                       require_approval=state.settings.registry.require_approval)
        await state.observe.audit.record(actor, "registry.alias_rollout", f"{model}@{alias}", detail)
        started = []
        for route in canaried:
            new = with_canary(state, route, model, alias, version)
            why = reason or f"{model}@{alias} -> version {version}"
            await gates_of(state).on_rollout(route, new.deployments[-1], "start", actor, routes_only=True)
            await routes_admin.apply_change(state, actor, route, new, "start_canary", reason=why)
            started.append(route.name)
        return {"alias": view, "rollouts": started, "rebuilt": []}
    view = await asyncio.to_thread(store.set_alias, model, alias, version, actor,
                                   require_approval=state.settings.registry.require_approval)
    await state.observe.audit.record(actor, "registry.alias", f"{model}@{alias}", detail)
    for route in following:
        await rebuild(state, route, model, alias)
    return {"alias": view, "rollouts": [], "rebuilt": [r.name for r in following]}


def with_canary(state: AppState, route: RouteConfig, model: str, alias: str, version: int) -> RouteConfig:
    """The route with a canary like its following primary, serving ``registry:NAME@VERSION``."""
    primary = next(d for d in route.deployments if follows(d, model, alias) and d.role == "primary")
    name, n = f"{primary.name}-v{version}", 1
    while state.routing.router.owner_of(name) is not None:
        n += 1
        name = f"{primary.name}-v{version}-{n}"
    engine = primary.engine.model_copy(update={"model": f"{PREFIX}{model}@{version}"})
    steps = route.canary_settings().steps
    canary = DeploymentConfig.model_validate({**primary.model_dump(exclude={"weight", "tier"}), "engine": engine,
                                              "name": name, "role": "canary", "traffic": steps[0]})
    return route.model_copy(update={"deployments": [*route.deployments, canary]})


async def rebuild(state: AppState, route: RouteConfig, model: str, alias: str) -> None:
    """Start the following deployments' engines again on the version the alias names now."""
    from strata.gateway import routes_admin

    async with state.routing.route_lock:
        unchanged = route.model_copy(update={"deployments": [d for d in route.deployments
                                                             if not follows(d, model, alias)]})
        await routes_admin.swap(state, unchanged, route)
    log.info("route %s: deployments following %s@%s rebuilt", route.name, model, alias)


async def on_route_change(state: AppState, old: RouteConfig, new: RouteConfig, action: str,
                          actor: str) -> RouteConfig:
    """Before a rollout's change is applied: a promoted canary of a pending alias version moves the alias and
    follows it again (``registry:NAME@ALIAS``); a rolled-back one clears ``pending``."""
    if action not in ("canary_promote", "canary_rollback"):
        return new
    canary = old.deployment("canary")
    ref = reference(canary) if canary is not None else None
    if canary is None or ref is None:
        return new
    model, pointer = parse_ref(ref)
    store = RegistryStore(state.db)
    for d in old.deployments:
        followed = reference(d) if d.role == "primary" else None
        if followed is None or not followed.startswith(f"{PREFIX}{model}@"):
            continue
        alias = parse_ref(followed)[1]
        row = await asyncio.to_thread(store.alias, model, alias)
        if row is None or str(row["pending"]) != pointer:
            continue
        detail = {"from": row["version"], "to": row["pending"], "route": old.name}
        if action == "canary_rollback":
            await asyncio.to_thread(store.clear_pending, model, alias)
            await state.observe.audit.record(actor, "registry.alias_rollback", f"{model}@{alias}", detail)
            return new
        await asyncio.to_thread(store.set_alias, model, alias, int(pointer), actor)
        await state.observe.audit.record(actor, "registry.alias", f"{model}@{alias}", {**detail, "canary": canary.name})
        engine = canary.engine.model_copy(update={"model": followed})
        deps = [x.model_copy(update={"engine": engine}) if x.name == canary.name else x for x in new.deployments]
        return new.model_copy(update={"deployments": deps})
    return new
