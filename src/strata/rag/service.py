"""The RAG service: collections of documents (team-scoped), ingest (parse → chunk → embed → index), hybrid
search as the caller, and incremental re-ingest of dataset versions.

Embeddings come from a callable injected at construction (wired to ``strata.pipeline.internal.embedder`` on the
``rag.embeddings_route``, so each is an accounted, traced internal call). Metadata lives in the database
(``rag.tables``); index files under ``<data_dir>/rag/<collection>/`` are rebuilt from it when missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from sqlalchemy import Engine

from strata.errors import InvalidRequest, NotFound, PermissionDenied
from strata.rag.acl import Principal, normalize_acl
from strata.rag.backends import check_backend, open_backend
from strata.rag.chunk import chunk as chunk_document
from strata.rag.config import ChunkingConfig, RagSettings
from strata.rag.index.base import IndexBackend, IndexedChunk, IndexHit
from strata.rag.parse import parse_document
from strata.rag.search import check_filter, matches, merge_by_score, rrf
from strata.rag.store import DbChunkSource, RagStore, chunk_id, chunk_key, indexed_text, now
from strata.rag.tables import RagChunk, RagCollection, RagDocument

logger = logging.getLogger(__name__)
FILTER_OVERSAMPLE = 10

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


def content_hash(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


class RagService:
    """Team-scoped collections; every method checks the team owns the collection (another team's is a 404).

    Writes to one collection are serialised (one lock per collection); searches run concurrently with them.
    """

    def __init__(self, db: Engine, settings: RagSettings, data_dir: Path, embed: EmbedFn, *,
                 lineage: Any = None, datasets: Any = None) -> None:
        self.store = RagStore(db)
        self.db, self.settings, self.root = db, settings, Path(data_dir) / "rag"
        self.embed, self.lineage, self.datasets = embed, lineage, datasets
        self._backends: dict[str, IndexBackend] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # collections

    async def create_collection(self, team: str, name: str, *, backend: str | None = None,
                                chunking: dict[str, Any] | None = None,
                                metadata: dict[str, Any] | None = None) -> CollectionInfo:
        name = name.strip()
        if not name:
            raise InvalidRequest("a collection needs a name", param="name")
        cfg = ChunkingConfig.model_validate({**self.settings.chunking.model_dump(), **(chunking or {})})
        row = RagCollection(id=f"col_{uuid.uuid4().hex[:24]}", team=team, name=name,
                            backend=check_backend(backend or self.settings.backend), dim=None,
                            chunking=cfg.model_dump(), meta=metadata or {}, created_at=now())
        await asyncio.to_thread(self.store.add_collection, row)
        await self._backend(row)
        return _collection_info(row, (0, 0))

    async def get_collection(self, team: str, collection_id: str) -> CollectionInfo:
        row = await asyncio.to_thread(self.store.collection, team, collection_id)
        counts = await asyncio.to_thread(self.store.counts, [row.id])
        return _collection_info(row, counts.get(row.id, (0, 0)))

    async def list_collections(self, team: str) -> list[CollectionInfo]:
        rows = await asyncio.to_thread(self.store.list_collections, team)
        counts = await asyncio.to_thread(self.store.counts, [r.id for r in rows])
        return [_collection_info(r, counts.get(r.id, (0, 0))) for r in rows]

    async def delete_collection(self, team: str, collection_id: str) -> None:
        row = await asyncio.to_thread(self.store.collection, team, collection_id)
        async with self._lock(row.id):
            backend = await self._backend(row)
            self._backends.pop(row.id, None)
            await asyncio.to_thread(backend.drop)
            await asyncio.to_thread(self.store.drop_collection, row.id)

    def _lock(self, collection_id: str) -> asyncio.Lock:
        return self._locks.setdefault(collection_id, asyncio.Lock())

    async def _backend(self, row: RagCollection) -> IndexBackend:
        backend = self._backends.get(row.id)
        if backend is None:
            source = DbChunkSource(self.db, row.id, bool(row.chunking.get("include_heading", True)))
            backend = await asyncio.to_thread(open_backend, row.backend, row.id, self.root / row.id, source,
                                              self.settings)
            backend = self._backends.setdefault(row.id, backend)
        return backend

    # documents

    async def add_document(self, team: str, collection_id: str, *, name: str, content: bytes,
                           media_type: str | None = None, acl: list[str] | None = None,
                           attributes: dict[str, Any] | None = None, document_id: str | None = None,
                           source: dict[str, Any] | None = None, parent: Any = None) -> DocumentInfo:
        """Parse, chunk, embed and index a document; the same content again is not re-embedded (``unchanged``,
        or ``updated`` with the stored vectors when only its ACL or attributes changed)."""
        row = await asyncio.to_thread(self.store.collection, team, collection_id)
        doc_id = document_id or f"doc_{uuid.uuid4().hex[:24]}"
        tokens = normalize_acl(team, acl)
        digest = content_hash(content)
        async with self._lock(row.id):
            old = await asyncio.to_thread(self.store.document, row.id, doc_id)
            if old is not None and old.content_hash == digest:
                return await self._refresh(row, old, tokens, attributes, name, source)
            parsed = await asyncio.to_thread(parse_document, name, content, media_type)
            cfg = ChunkingConfig.model_validate(row.chunking)
            spans = await asyncio.to_thread(chunk_document, parsed, cfg)
            texts = [s.indexed_text(cfg.include_heading) for s in spans]
            vectors = await self._embed(texts, parent)
            stamp = now()
            doc = RagDocument(collection_id=row.id, id=doc_id, team=team, name=name, media_type=parsed.media_type,
                              content_hash=digest, acl=tokens, attributes=attributes or {}, source=source,
                              chunk_count=len(spans), created_at=old.created_at if old else stamp, updated_at=stamp)
            chunks = [RagChunk(collection_id=row.id, document_id=doc_id, ordinal=i, text=s.text, heading=s.heading,
                               start=s.start, end=s.end, vector=v.astype("<f4").tobytes())
                      for i, (s, v) in enumerate(zip(spans, vectors, strict=True))]
            keys = await asyncio.to_thread(self.store.replace_document, doc, chunks)
            if len(vectors) and row.dim is None:
                await asyncio.to_thread(self.store.set_dim, row.id, int(vectors.shape[1]))
            indexed = [IndexedChunk(k, doc_id, t, tokens, v, attributes or {})
                       for k, t, v in zip(keys, texts, vectors, strict=True)]
            await self._reindex(row, doc_id, indexed)
            await asyncio.to_thread(self._record_lineage, team, row.id, doc_id, keys, source)
        return _document_info(doc, "updated" if old is not None else "added")

    async def _refresh(self, row: RagCollection, old: RagDocument, tokens: list[str],
                       attributes: dict[str, Any] | None, name: str, source: dict[str, Any] | None) -> DocumentInfo:
        attrs = attributes if attributes is not None else (old.attributes or {})
        if old.acl == tokens and (old.attributes or {}) == attrs and old.name == name:
            return _document_info(old, "unchanged")
        old.acl, old.attributes, old.name, old.updated_at = tokens, attrs, name, now()
        if source is not None:
            old.source = source
        await asyncio.to_thread(self.store.update_document, old)
        include = bool(row.chunking.get("include_heading", True))
        stored = await asyncio.to_thread(self.store.chunk_vectors, row.id, old.id)
        await self._reindex(row, old.id, [IndexedChunk(c.key, old.id, indexed_text(c.text, c.heading, include),
                                                       tokens, np.frombuffer(c.vector, dtype="<f4"), attrs)
                                          for c in stored])
        return _document_info(old, "updated")

    async def _reindex(self, row: RagCollection, doc_id: str, chunks: list[IndexedChunk]) -> None:
        backend = await self._backend(row)

        def apply() -> None:
            backend.delete([doc_id])
            backend.upsert(chunks)
            backend.flush()

        await asyncio.to_thread(apply)

    async def _embed(self, texts: list[str], parent: Any = None) -> np.ndarray:
        out: list[list[float]] = []
        step = self.settings.embed_batch
        for i in range(0, len(texts), step):
            batch = texts[i:i + step]
            out.extend(await (self.embed(batch, parent) if parent is not None else self.embed(batch)))
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1) if out else np.zeros((0, 0), np.float32)

    def _record_lineage(self, team: str, collection_id: str, doc_id: str, keys: list[int],
                        source: dict[str, Any] | None) -> None:
        if self.lineage is None:
            return
        from strata.data.lineage import Edge, record_node

        node = f"{collection_id}/{doc_id}"
        edges = [Edge("document", node, "chunk", chunk_id(k), "chunked") for k in keys]
        if source and source.get("version") and source.get("record"):
            edges.append(Edge("record", record_node(source["version"], source["record"]), "document", node,
                              "ingested"))
        self.lineage.add(edges, team=team)

    async def remove_document(self, team: str, collection_id: str, document_id: str) -> None:
        row = await asyncio.to_thread(self.store.collection, team, collection_id)
        async with self._lock(row.id):
            if not await asyncio.to_thread(self.store.remove_document, row.id, document_id):
                raise NotFound(f"no document {document_id!r} in collection {collection_id!r}", param="document_id")
            await self._reindex(row, document_id, [])

    async def list_documents(self, team: str, collection_id: str) -> list[DocumentInfo]:
        row = await asyncio.to_thread(self.store.collection, team, collection_id)
        return [_document_info(d) for d in await asyncio.to_thread(self.store.documents, row.id)]

    # search

    async def search(self, team: str, collection_ids: list[str], query: str, principal: Principal, *, k: int = 10,
                     mode: Mode = "hybrid", filters: dict[str, Any] | None = None, rerank: Reranker | None = None,
                     parent: Any = None) -> list[Hit]:
        """The top ``k`` chunks the caller may read, from the team's collections; ACL filtered inside each index."""
        if principal.team != team:
            raise PermissionDenied("a search runs as a caller of the collection's team")
        if mode not in ("hybrid", "dense", "lexical"):
            raise InvalidRequest(f"unknown search mode {mode!r}", param="mode")
        if k < 1:
            raise InvalidRequest("k must be at least 1", param="k")
        check_filter(filters)
        rows = [await asyncio.to_thread(self.store.collection, team, c) for c in dict.fromkeys(collection_ids)]
        allowed = principal.tokens()
        want = k * FILTER_OVERSAMPLE if filters else k
        per_list = max(want, self.settings.search.candidates) if mode == "hybrid" else want
        vector = (await self._embed([query], parent))[0] if mode != "lexical" else None
        backends = [await self._backend(r) for r in rows]

        def retrieve() -> list[IndexHit]:
            dense = merge_by_score([b.search_dense(vector, per_list, allowed) for b in backends]) \
                if vector is not None else []
            lexical = merge_by_score([b.search_lexical(query, per_list, allowed) for b in backends]) \
                if mode != "dense" else []
            if mode == "dense":
                return dense
            if mode == "lexical":
                return lexical
            s = self.settings.search
            return rrf([(s.dense_weight, dense[:per_list]), (s.lexical_weight, lexical[:per_list])], s.rrf_k)

        ranked = await asyncio.to_thread(retrieve)
        hits = await asyncio.to_thread(self._hits, ranked, allowed, filters, want)
        if rerank is not None:
            hits = await rerank(query, hits)
        return hits[:k]

    def _hits(self, ranked: list[IndexHit], allowed: frozenset[str], filters: dict[str, Any] | None,
              limit: int) -> list[Hit]:
        rows = self.store.chunks_by_key([h.key for h in ranked[:max(limit, len(ranked))]])
        out: list[Hit] = []
        for h in ranked:
            found = rows.get(h.key)
            if found is None:
                continue  # deleted since the index answered
            chunk, doc = found
            if allowed.isdisjoint(doc.acl):
                logger.error("index returned chunk %s the caller may not read; dropped", h.key)
                continue
            if not matches(filters, doc.attributes or {}):
                continue
            out.append(Hit(chunk_id(chunk.key), doc.id, doc.name, chunk.text, h.score, doc.collection_id,
                           doc.attributes or {}, chunk.heading))
            if len(out) >= limit:
                break
        return out

    # datasets

    async def ingest_dataset(self, team: str, collection_id: str, version: Any,
                             records: Iterable[Any] | None = None, parent: Any = None) -> IngestReport:
        """Make the collection hold the version's document records: add new, update changed, remove gone ones
        (of the same dataset); an unchanged record (same content hash and ACL) is not parsed nor embedded."""
        row = await asyncio.to_thread(self.store.collection, team, collection_id)
        if records is None:
            if self.datasets is None:
                raise InvalidRequest("no dataset store to read the version's records from", param="dataset")
            records = await asyncio.to_thread(lambda: list(self.datasets.iter_records(version)))
        counts = {"added": 0, "updated": 0, "unchanged": 0}
        seen: set[str] = set()
        embedded = 0
        for record in records:
            name, content, media_type = _document_fields(record)
            seen.add(record.id)
            before = await asyncio.to_thread(self.store.document, row.id, record.id)
            info = await self.add_document(
                team, row.id, name=name, content=content, media_type=media_type, acl=record.data.get("acl"),
                attributes=record.data.get("attributes"), document_id=record.id, parent=parent,
                source={"dataset": version.dataset_id, "version": version.id, "record": record.id})
            counts[info.status] += 1
            if before is None or before.content_hash != info.content_hash:
                embedded += info.chunk_count
        removed = 0
        for doc in await asyncio.to_thread(self.store.documents, row.id):
            if doc.id not in seen and (doc.source or {}).get("dataset") == version.dataset_id:
                await self.remove_document(team, row.id, doc.id)
                removed += 1
        return IngestReport(counts["added"], counts["updated"], counts["unchanged"], removed, embedded)

    async def chunk(self, chunk_id: str) -> ChunkInfo:
        key = chunk_key(chunk_id)
        found = (await asyncio.to_thread(self.store.chunks_by_key, [key])).get(key)
        if found is None:
            raise NotFound(f"no chunk {chunk_id!r}")
        c, d = found
        return ChunkInfo(chunk_id, c.collection_id, c.document_id, d.team, c.text, c.start, c.end, c.heading)

    async def close(self) -> None:
        backends, self._backends = list(self._backends.values()), {}
        for b in backends:
            await asyncio.to_thread(b.close)


def _document_fields(record: Any) -> tuple[str, bytes, str | None]:
    data = record.data
    name = str(data.get("name") or record.id)
    if isinstance(data.get("text"), str):
        return name, data["text"].encode(), data.get("media_type")
    content = data.get("content")
    if isinstance(content, str):
        if data.get("content_encoding") == "base64":
            import base64

            return name, base64.b64decode(content), data.get("media_type")
        return name, content.encode(), data.get("media_type")
    raise InvalidRequest(f"record {record.id!r} has no text or content to ingest", param="dataset")


def _collection_info(row: RagCollection, counts: tuple[int, int]) -> CollectionInfo:
    return CollectionInfo(row.id, row.team, row.name, row.backend, row.chunking, row.meta or {}, counts[0],
                          counts[1], row.created_at.timestamp())


def _document_info(doc: RagDocument, status: Status = "unchanged") -> DocumentInfo:
    return DocumentInfo(doc.id, doc.collection_id, doc.name, doc.media_type, doc.content_hash, list(doc.acl),
                        doc.attributes or {}, doc.chunk_count, status, doc.source)
