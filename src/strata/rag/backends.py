"""Index backends by name, loaded lazily (``"module:attr"``), opened per collection."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from strata.errors import InvalidRequest
from strata.rag.config import RagSettings
from strata.rag.index.base import ChunkSource, IndexBackend

BUILTIN = {"embedded": "strata.rag.index.embedded:EmbeddedBackend",
           "chroma": "strata.rag.index.chroma:ChromaBackend"}


def check_backend(name: str) -> str:
    if name not in BUILTIN:
        raise InvalidRequest(f"unknown index backend {name!r}; choose one of {', '.join(BUILTIN)}", param="backend")
    return name


def open_backend(name: str, collection_id: str, path: Path, source: ChunkSource,
                 settings: RagSettings) -> IndexBackend:
    module, _, attr = BUILTIN[check_backend(name)].partition(":")
    cls: Any = getattr(importlib.import_module(module), attr)
    if name == "embedded":
        return cls(path, source, exact_below=settings.search.exact_below, dtype=settings.embedded.dtype,
                   connectivity=settings.embedded.connectivity, expansion_add=settings.embedded.expansion_add,
                   expansion_search=settings.embedded.expansion_search)
    return cls(collection_id, path, source, settings.chroma)
