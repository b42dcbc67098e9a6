"""``registry:NAME@ALIAS`` (or ``@VERSION``) as a deployment's model: resolved to the version's artifact, engine
parameters and type when the engine is built (at startup, on a route change, on an alias move).

The route keeps the reference as written; only the engine sees the resolved config.
"""

from __future__ import annotations

from sqlalchemy import Engine as DbEngine

from strata.errors import ConfigError, StrataError
from strata.registry.store import PREFIX, RegistryStore, parse_ref
from strata.routing.config import DeploymentConfig, RouteConfig


def reference(dep: DeploymentConfig) -> str | None:
    model = getattr(dep.engine, "model", None)
    return model if isinstance(model, str) and model.startswith(PREFIX) else None


def follows(dep: DeploymentConfig, model: str, alias: str) -> bool:
    return reference(dep) == f"{PREFIX}{model}@{alias}"


def routes_following(routes: list[RouteConfig], model: str, alias: str) -> list[RouteConfig]:
    return [r for r in routes if any(follows(d, model, alias) and d.role != "canary" for d in r.deployments)]


def version_ref(db: DbEngine, dep: DeploymentConfig) -> str | None:
    """``NAME@N``: the registry version a deployment serves now, or None when it names no registry model."""
    ref = reference(dep)
    if ref is None:
        return None
    name, pointer = parse_ref(ref)
    try:
        return str(RegistryStore(db).version(name, pointer)["ref"])
    except StrataError:
        return None


def resolved(db: DbEngine, dep: DeploymentConfig) -> DeploymentConfig:
    """The deployment with its registry reference replaced by the version it names (others unchanged)."""
    ref = reference(dep)
    if ref is None:
        return dep
    try:
        name, pointer = parse_ref(ref)
        version = RegistryStore(db).version(name, pointer)
    except StrataError as exc:
        raise ConfigError(f"deployment {dep.name}: {exc.message}") from None
    if version["engine_type"] != dep.engine.type:
        raise ConfigError(f"deployment {dep.name}: {version['ref']} is a {version['engine_type']} model, but the "
                          f"deployment's engine is {dep.engine.type}")
    fields = {**dep.engine.model_dump(), **version["parameters"], "model": version["artifact_uri"]}
    engine = type(dep.engine).model_validate(fields)
    return dep.model_copy(update={"engine": engine})
