"""Resolve a request's ``model`` to a route, then plan its attempts across the route's deployments.

A request's plan: the canary first for its ``traffic`` share of requests (sticky per affinity key),
then up to ``1 + retries`` attempts on primary deployments (balanced; untried ones first; on a
complexity router, those of the request's tier first), then each fallback deployment in config order.
Deployments that are ejected (breaker open), not ready (active health check) or full (``max_in_flight``)
are skipped. When nothing at all can be tried because every deployment is ejected, the route panics
(``breaker.panic``): the request goes to one primary anyway, once (see ``routing.outlier``). The plan is
consumed lazily by the gateway, which only moves to the next attempt before the first byte reaches the client.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strata.engines.base import Engine, EngineHealth
from strata.engines.capabilities import Capabilities, capabilities_of, combine, require
from strata.errors import NotFound, PermissionDenied, UpstreamUnavailable
from strata.governance.keys import Principal
from strata.routing.balancer import Candidate, pick, unit_hash
from strata.routing.breaker import CLOSED, Breaker
from strata.routing.config import DeploymentConfig, RouteConfig
from strata.routing.outlier import Served


@dataclass(slots=True)
class Deployment:
    """A deployment at run time: its config, engine, breaker and requests in flight."""

    cfg: DeploymentConfig
    engine: Engine
    breaker: Breaker
    outstanding: int = 0
    served: Served = field(default_factory=Served)

    @property
    def full(self) -> bool:
        return self.cfg.max_in_flight is not None and self.outstanding >= self.cfg.max_in_flight


@dataclass(frozen=True, slots=True)
class Target:
    route: RouteConfig
    deployment: DeploymentConfig
    engine: Engine
    runtime: Deployment


@dataclass(slots=True)
class Attempts:
    """The attempt plan of one request, consumed with ``next()``."""

    router: Router
    route: RouteConfig
    affinity_key: str | None
    primary_left: int
    tier: str | None = None
    tried: list[str] = field(default_factory=list)
    panic: bool = False

    def next(self) -> Target | None:
        if not self.tried and (canary := self.router.canary_for(self.route, self.affinity_key)) is not None:
            self.tried.append(canary.cfg.name)
            return self.router.target(self.route, canary)
        if self.primary_left > 0:
            self.primary_left -= 1
            chosen = self.router.choose(self.route, "primary", self.affinity_key, self.tried, self.tier)
            if chosen is not None:
                self.tried.append(chosen.cfg.name)
                return self.router.target(self.route, chosen)
            self.primary_left = 0
        for d in self.router.usable(self.route, "fallback"):
            if d.cfg.name not in self.tried:
                self.tried.append(d.cfg.name)
                return self.router.target(self.route, d)
        if not self.tried and self.route.breaker.panic and (p := self.router.panic_pick(self.route)) is not None:
            self.tried.append(p.cfg.name)
            self.panic = True
            return self.router.target(self.route, p)
        return None

    def unavailable(self) -> UpstreamUnavailable:
        """Why nothing could be tried at all: overload (all full) or all ejected."""
        deps = [self.router.deployments[d.name] for d in self.route.deployments]
        if any(d.full for d in deps):
            return UpstreamUnavailable(f"All deployments of '{self.route.name}' are at capacity; retry shortly.",
                                       code="overloaded", retry_after=1.0)
        wait = min((d.breaker.retry_after() for d in deps), default=1.0)
        return UpstreamUnavailable(f"No healthy deployment for '{self.route.name}' right now.",
                                   code="no_healthy_deployment", retry_after=max(wait, 1.0))


class Router:
    def __init__(self, routes: list[RouteConfig], engines: dict[str, Engine], health: dict[str, EngineHealth],
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.routes = {r.name: r for r in routes}
        self.health = health
        self.clock = clock
        self.deployments = {d.name: Deployment(d, engines[d.name], Breaker(r.breaker, clock))
                            for r in routes for d in r.deployments}
        self.rng = rng or random.Random()
        self.canaries: dict[str, DeploymentConfig] = {}
        self.shadows: dict[str, DeploymentConfig] = {}
        for r in routes:
            self._index(r)

    def _index(self, route: RouteConfig) -> None:
        for role, table in (("canary", self.canaries), ("shadow", self.shadows)):
            dep = route.deployment(role)
            if dep is None:
                table.pop(route.name, None)
            else:
                table[route.name] = dep

    def replace_route(self, cfg: RouteConfig, engines: dict[str, Engine]) -> list[Deployment]:
        """Swap in a route's new config at run time; returns the deployments it no longer has.

        Deployments that stay keep their breaker and in-flight count; ``engines`` holds the engine of
        every deployment that is new or whose engine config changed.
        """
        old = self.routes.get(cfg.name)
        gone = {d.name for d in old.deployments} if old else set()
        removed: list[Deployment] = []
        for d in cfg.deployments:
            gone.discard(d.name)
            rt = self.deployments.get(d.name)
            if rt is None:
                self.deployments[d.name] = Deployment(d, engines[d.name], Breaker(cfg.breaker, self.clock))
                continue
            if d.name in engines:
                removed.append(Deployment(rt.cfg, rt.engine, rt.breaker, rt.outstanding))
                rt.engine = engines[d.name]
            rt.cfg = d
            rt.breaker.cfg = cfg.breaker
        removed += [self.deployments.pop(n) for n in gone]
        self.routes[cfg.name] = cfg
        self._index(cfg)
        return removed

    def owner_of(self, deployment: str) -> str | None:
        return next((r.name for r in self.routes.values() for d in r.deployments if d.name == deployment), None)

    def resolve(self, model: str, principal: Principal, endpoint: str,
                body: dict[str, Any] | None = None) -> RouteConfig:
        """The route for ``model``; a 400 naming the field when the request needs what it cannot do."""
        route = self.routes.get(model)
        if route is None:
            raise NotFound(f"The model '{model}' does not exist or you do not have access to it.", param="model")
        if not principal.may_use(model):
            raise PermissionDenied(f"This API key is not allowed to use the model '{model}'.", param="model")
        require(self.capabilities(route), model, endpoint, body or {})
        return route

    def capabilities(self, route: RouteConfig) -> Capabilities:
        """What every deployment that may answer the route's clients can do (shadows only mirror)."""
        return combine(capabilities_of(self.deployments[d.name].engine) for d in route.deployments
                       if d.role != "shadow" and d.name in self.deployments)

    def attempts(self, route: RouteConfig, affinity_key: str | None = None, tier: str | None = None) -> Attempts:
        return Attempts(self, route, affinity_key if route.affinity else None, 1 + route.retries, tier)

    def canary_for(self, route: RouteConfig, affinity_key: str | None) -> Deployment | None:
        """The canary, for its traffic share of requests: by affinity key when there is one (stable A/B)."""
        cfg = self.canaries.get(route.name)
        if cfg is None or cfg.traffic is None:
            return None
        draw = unit_hash(f"{route.name}\0{affinity_key}") if affinity_key else self.rng.random()
        if draw * 100 >= cfg.traffic:
            return None
        d = self.deployments[cfg.name]
        return d if d.breaker.available() and not d.full and self._ready(cfg.name) else None

    def shadow_for(self, route: RouteConfig) -> Deployment | None:
        """The shadow deployment, for its mirrored share of requests."""
        cfg = self.shadows.get(route.name)
        if cfg is None or cfg.traffic is None or self.rng.random() * 100 >= cfg.traffic:
            return None
        d = self.deployments[cfg.name]
        return d if d.breaker.available() and self._ready(cfg.name) else None

    def usable(self, route: RouteConfig, role: str) -> list[Deployment]:
        """Deployments of a role that may take a request now; unready ones only if nothing else is."""
        deps = [self.deployments[d.name] for d in route.deployments if d.role == role]
        open_ = [d for d in deps if d.breaker.available() and not d.full]
        ready = [d for d in open_ if self._ready(d.cfg.name)]
        return ready or open_

    def choose(self, route: RouteConfig, role: str, affinity_key: str | None, tried: list[str],
               tier: str | None = None) -> Deployment | None:
        usable = self.usable(route, role)
        fresh = [d for d in usable if d.cfg.name not in tried] or usable
        if tier is not None:  # the other tier if this one is down or already failed this request
            fresh = [d for d in fresh if d.cfg.tier == tier] or fresh
        if not fresh:
            return None
        cands = [Candidate(d.cfg.name, d.cfg.weight, d.outstanding) for d in fresh]
        return self.deployments[pick(cands, route.balancer, affinity_key, self.rng).name]

    def panic_pick(self, route: RouteConfig) -> Deployment | None:
        """A primary for a route whose every deployment is ejected: the one whose cool-down ends first."""
        deps = [self.deployments[d.name] for d in route.deployments if d.role == "primary"]
        ejected = [d for d in deps if not d.full and d.breaker.state != CLOSED]
        return min(ejected, key=lambda d: d.breaker.retry_after(), default=None)

    def in_panic(self, route: RouteConfig) -> bool:
        """Every deployment that could serve the route is ejected (and the route panics rather than refuse)."""
        deps = [self.deployments[d.name] for d in route.deployments if d.role in ("primary", "fallback")]
        return route.breaker.panic and all(d.breaker.state != CLOSED for d in deps)

    def target(self, route: RouteConfig, d: Deployment) -> Target:
        return Target(route, d.cfg, d.engine, d)

    def _ready(self, name: str) -> bool:
        h = self.health.get(name)
        return h is None or h.ready

    def visible_to(self, principal: Principal) -> list[RouteConfig]:
        return [r for r in self.routes.values() if principal.may_use(r.name)]
