"""The engine config models, re-exported from their home, ``strata.engines.config`` (kept so that
``strata.config.engines`` imports, and the registry's built-in targets, keep working)."""

from strata.engines.config import (
    ENGINE_SCHEMA,
    EngineConfig,
    EngineField,
    LlamaCppEngineConfig,
    OpenAIEngineConfig,
    SentenceTransformersEngineConfig,
    UpstreamCapabilities,
)

__all__ = [
    "ENGINE_SCHEMA",
    "EngineConfig",
    "EngineField",
    "LlamaCppEngineConfig",
    "OpenAIEngineConfig",
    "SentenceTransformersEngineConfig",
    "UpstreamCapabilities",
]
