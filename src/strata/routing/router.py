"""Resolve a request's ``model`` to a route and pick one of its deployments.

A route may list several deployments; this picks by weight. Later stages (health-aware balancing,
fallbacks, canaries) replace ``pick`` without changing callers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from strata.config.settings import DeploymentConfig, RouteConfig
from strata.engines.base import Engine
from strata.errors import InvalidRequest, NotFound, PermissionDenied
from strata.governance.keys import Principal

# which endpoints each engine type can serve
CAPABILITIES: dict[str, frozenset[str]] = {
    "llamacpp": frozenset({"chat", "completion"}),
    "sentence-transformers": frozenset({"embeddings"}),
    "openai": frozenset({"chat", "completion", "embeddings"}),
}
ENDPOINT_NAMES = {"chat": "chat completions", "completion": "completions", "embeddings": "embeddings"}


@dataclass(frozen=True, slots=True)
class Target:
    route: RouteConfig
    deployment: DeploymentConfig
    engine: Engine


class Router:
    def __init__(self, routes: list[RouteConfig], engines: dict[str, Engine]) -> None:
        self.routes = {r.name: r for r in routes}
        self.engines = engines
        self._rng = random.Random()

    def resolve(self, model: str, principal: Principal, endpoint: str) -> Target:
        route = self.routes.get(model)
        if route is None:
            raise NotFound(f"The model '{model}' does not exist or you do not have access to it.", param="model")
        if not principal.may_use(model):
            raise PermissionDenied(f"This API key is not allowed to use the model '{model}'.", param="model")
        deployment = self.pick(route)
        caps = CAPABILITIES.get(deployment.engine.type, frozenset({"chat", "completion", "embeddings"}))
        if endpoint not in caps:
            raise InvalidRequest(
                f"The model '{model}' does not support {ENDPOINT_NAMES[endpoint]}.", param="model",
                code="unsupported_endpoint")
        return Target(route, deployment, self.engines[deployment.name])

    def pick(self, route: RouteConfig) -> DeploymentConfig:
        if len(route.deployments) == 1:
            return route.deployments[0]
        return self._rng.choices(route.deployments, weights=[d.weight for d in route.deployments])[0]

    def visible_to(self, principal: Principal) -> list[RouteConfig]:
        return [r for r in self.routes.values() if principal.may_use(r.name)]
