"""Engine types by name -> factory ``"module:attr"``, loaded lazily; third-party engines register
through the ``strata.engines`` entry-point group with the same factory signature
``factory(name, engine_config, **common) -> Engine``.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from strata.config.settings import DeploymentConfig, Settings
from strata.engines.base import Engine
from strata.errors import ConfigError

BUILTIN: dict[str, str] = {
    "openai": "strata.engines.http:openai_engine",
    "llamacpp": "strata.engines.local:llamacpp_engine",
    "sentence-transformers": "strata.engines.local:sentence_transformers_engine",
}
LOCAL = {"llamacpp", "sentence-transformers"}


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def factory_for(engine_type: str) -> Any:
    if engine_type in BUILTIN:
        return _load(BUILTIN[engine_type])
    for ep in entry_points(group="strata.engines"):
        if ep.name == engine_type:
            return ep.load()
    raise ConfigError(f"unknown engine type {engine_type!r}")


def build_engine(deployment: DeploymentConfig, settings: Settings) -> Engine:
    """Build (not start) the engine of one deployment; raises ConfigError for a missing model or package."""
    cfg = deployment.engine
    common: dict[str, Any] = {}
    if cfg.type in LOCAL:
        common = {
            "wait_timeout": settings.server.engine_wait_timeout,
            "supervisor": settings.supervisor,
            "log_dir": settings.data_dir / "logs",
        }
    engine: Engine = factory_for(cfg.type)(deployment.name, cfg, **common)
    return engine
