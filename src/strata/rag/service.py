"""The RAG service: collections of documents (team-scoped), ingest (parse → chunk → embed → index), hybrid
search as the caller, and incremental re-ingest of dataset versions.

Embeddings come from a callable injected at construction (wired to ``strata.pipeline.internal.embedder`` on the
``rag.embeddings_route``, so each is an accounted, traced internal call). Metadata lives in the database
(``rag.tables``); index files under ``<data_dir>/rag/<collection>/`` are rebuilt from it when missing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from strata.rag.acl import Principal

Mode = Literal["hybrid", "dense", "lexical"]
Status = Literal["added", "updated", "unchanged"]


class Embed(Protocol):
    def __call__(self, texts: list[str], parent: Any = None) -> Awaitable[list[list[float]]]: ...


class Reranker(Protocol):
    """An optional re-ranking hook: reorder (and may cut) fused hits for a query."""

    async def __call__(self, query: str, hits: list[Hit]) -> list[Hit]: ...


@dataclass(frozen=True)
class CollectionInfo:
    id: str
    team: str
    name: str
    backend: str
    chunking: dict[str, Any]
    metadata: dict[str, Any]
    document_count: int
    chunk_count: int
    created_at: float  # unix seconds

    def view(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class DocumentInfo:
    id: str
    collection_id: str
    name: str
    media_type: str
    content_hash: str
    acl: list[str]
    attributes: dict[str, Any]
    chunk_count: int
    status: Status = "unchanged"
    source: dict[str, Any] | None = None

    def view(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Hit:
    chunk_id: str
    document_id: str
    document_name: str
    text: str
    score: float
    collection_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    heading: str | None = None

    def view(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ChunkInfo:
    """A chunk for lineage: its text and where it came from."""

    id: str
    collection_id: str
    document_id: str
    team: str
    text: str
    start: int
    end: int
    heading: str | None


@dataclass(frozen=True)
class IngestReport:
    added: int
    updated: int
    unchanged: int
    removed: int
    embedded_chunks: int

    def view(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


EmbedFn = Callable[..., Awaitable[list[list[float]]]]


class RagService:
    """Team-scoped collections; every method checks the team owns the collection (another team's is a 404)."""

    def __init__(self, db: Any, settings: Any, data_dir: Any, embed: EmbedFn, *, lineage: Any = None,
                 datasets: Any = None) -> None:
        raise NotImplementedError

    async def create_collection(self, team: str, name: str, *, backend: str | None = None,
                                chunking: dict[str, Any] | None = None,
                                metadata: dict[str, Any] | None = None) -> CollectionInfo:
        raise NotImplementedError

    async def get_collection(self, team: str, collection_id: str) -> CollectionInfo:
        raise NotImplementedError

    async def list_collections(self, team: str) -> list[CollectionInfo]:
        raise NotImplementedError

    async def delete_collection(self, team: str, collection_id: str) -> None:
        raise NotImplementedError

    async def add_document(self, team: str, collection_id: str, *, name: str, content: bytes,
                           media_type: str | None = None, acl: list[str] | None = None,
                           attributes: dict[str, Any] | None = None, document_id: str | None = None,
                           source: dict[str, Any] | None = None, parent: Any = None) -> DocumentInfo:
        raise NotImplementedError

    async def remove_document(self, team: str, collection_id: str, document_id: str) -> None:
        raise NotImplementedError

    async def list_documents(self, team: str, collection_id: str) -> list[DocumentInfo]:
        raise NotImplementedError

    async def search(self, team: str, collection_ids: list[str], query: str, principal: Principal, *, k: int = 10,
                     mode: Mode = "hybrid", filters: dict[str, Any] | None = None, rerank: Reranker | None = None,
                     parent: Any = None) -> list[Hit]:
        raise NotImplementedError

    async def ingest_dataset(self, team: str, collection_id: str, version: Any,
                             records: Iterable[Any] | None = None) -> IngestReport:
        raise NotImplementedError

    async def chunk(self, chunk_id: str) -> ChunkInfo:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError
