"""Engine types by name: the built-ins, and third-party engines from the ``strata.engines`` entry-point group.

A built-in is two ``"module:attr"`` targets (its config model, its factory), imported only when a deployment
of that type is validated or built, so ``import strata`` never pays for llama.cpp or torch. A third-party
engine is an installed distribution declaring, in its ``pyproject.toml``::

    [project.entry-points."strata.engines"]
    echo = "strata_echo_engine:ENGINE"

where ``ENGINE`` is an ``EngineSpec`` (or anything with ``config`` and ``build``); its module is imported
the first time a deployment names that type. Built-in names cannot be taken by a plugin.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import EntryPoint
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from strata.engines.base import Common, Engine, EngineSpec
from strata.errors import ConfigError
from strata.plugins import discover

if TYPE_CHECKING:
    from strata.config.settings import Settings
    from strata.routing.config import DeploymentConfig

GROUP = "strata.engines"
BUILTIN: dict[str, tuple[str, str]] = {  # type -> (config model, factory)
    "llamacpp": ("strata.config.engines:LlamaCppEngineConfig", "strata.engines.local:llamacpp_engine"),
    "openai": ("strata.config.engines:OpenAIEngineConfig", "strata.engines.http:openai_engine"),
    "sentence-transformers": ("strata.config.engines:SentenceTransformersEngineConfig",
                              "strata.engines.local:sentence_transformers_engine"),
}


class UnknownEngine(ValueError):
    """A type no built-in or installed plugin provides, or a plugin that cannot be loaded."""


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


@cache
def plugins() -> dict[str, EntryPoint]:
    """Installed third-party engine types (read from package metadata once; nothing is imported)."""
    return discover(GROUP, BUILTIN, "engine")


def known() -> list[str]:
    """Every engine type a deployment may name: the built-ins, then installed plugins."""
    return [*BUILTIN, *sorted(plugins())]


def config_model(engine_type: str) -> type[BaseModel]:
    """The config model of one engine type (imports a plugin's module, not a built-in's engine)."""
    if engine_type in BUILTIN:
        model: type[BaseModel] = _load(BUILTIN[engine_type][0])
        return model
    return spec(engine_type).config


@cache
def spec(engine_type: str) -> EngineSpec:
    """The registered engine type; raises ``UnknownEngine`` naming the known ones."""
    if engine_type in BUILTIN:
        config, factory = BUILTIN[engine_type]
        return EngineSpec(_load(config), _load(factory))
    ep = plugins().get(engine_type)
    if ep is None:
        raise UnknownEngine(f"unknown engine type {engine_type!r} (known: {', '.join(known())}; third-party "
                            f"engines register in the {GROUP!r} entry-point group)")
    where = f"engine plugin {engine_type!r} ({ep.value}{_dist(ep)})"
    try:
        obj = ep.load()
    except Exception as exc:  # an import error in someone else's package: say whose
        raise UnknownEngine(f"{where} failed to load: {type(exc).__name__}: {exc}") from None
    return _checked(obj, where)


def _dist(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f", from {dist.name} {dist.version}" if dist is not None else ""


def _checked(obj: Any, where: str) -> EngineSpec:
    config, build = getattr(obj, "config", None), getattr(obj, "build", None)
    if not (isinstance(config, type) and issubclass(config, BaseModel)) or not callable(build):
        raise UnknownEngine(f"{where} is not an engine: it needs `config` (a pydantic model) and `build`")
    if "type" not in config.model_fields:
        raise UnknownEngine(f"{where}: its config model {config.__name__} needs a `type` field")
    return obj if isinstance(obj, EngineSpec) else EngineSpec(config, build)


def build_engine(deployment: DeploymentConfig, settings: Settings) -> Engine:
    """Build (not start) the engine of one deployment; raises ConfigError for a missing model or package."""
    cfg = deployment.engine
    common: Common = {"wait_timeout": settings.server.engine_wait_timeout, "supervisor": settings.supervisor,
                      "log_dir": settings.data_dir / "logs"}
    try:
        engine_spec = spec(cfg.type)
    except UnknownEngine as exc:
        raise ConfigError(f"deployment {deployment.name!r}: {exc}") from None
    return engine_spec.build(deployment.name, cfg, **common)
