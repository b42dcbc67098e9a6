"""``VectorStores``: OpenAI vector stores over RAG collections (``rag.RagService``), team-scoped.

A vector store is one collection of its team; a file added to it becomes one document of that collection
(document id = file id), ingested in the background (status ``in_progress`` -> ``completed`` | ``failed``)
with its ``attributes`` and ACL (the ``acl`` attribute, see ``acl_of``). Search runs as the caller
(``rag.acl.Principal``) inside the collection's index. Methods that touch only the database block (the HTTP
layer runs them in a thread); ``add_file``/``search`` are async.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from strata.errors import InvalidRequest, NotFound, StrataError
from strata.files.store import FileStore
from strata.files.tables import FileBatchRow, VectorStoreFileRow, VectorStoreRow
from strata.rag.acl import Principal as Reader
from strata.rag.acl import check_token

log = logging.getLogger(__name__)
ACL_ATTRIBUTE = "acl"
STATUSES = ("in_progress", "completed", "cancelled", "failed")
Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


def acl_of(attributes: dict[str, Any] | None) -> list[str] | None:
    """A file's readers from its ``acl`` attribute: ``"team:eng,user:alice,group:hr"`` (comma-separated ACL
    tokens); absent or empty: the whole owning team."""
    raw = (attributes or {}).get(ACL_ATTRIBUTE)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise InvalidRequest('attributes.acl is a string of comma-separated tokens: "team:T,user:U,group:G"',
                             param="attributes.acl")
    return [check_token(t.strip()) for t in raw.split(",") if t.strip()]


def check_filters(f: Any, depth: int = 0) -> None:
    """OpenAI's attribute filters are objects all the way down (the RAG service checks their types/keys)."""
    if not isinstance(f, dict) or depth > 16:
        raise InvalidRequest("filters are objects: {type, key, value} or {type: and|or, filters: [...]}",
                             param="filters")
    for sub in f.get("filters") or () if isinstance(f.get("filters"), list) else ():
        check_filters(sub, depth + 1)


def chunking_of(strategy: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's ``chunking_strategy`` as the collection's chunking settings (``auto``: the defaults)."""
    if not strategy or strategy.get("type") == "auto":
        return None
    static = strategy.get("static") if strategy.get("type") == "static" else None
    if not isinstance(static, dict):
        raise InvalidRequest("chunking_strategy is {\"type\": \"auto\"} or {\"type\": \"static\", \"static\": "
                             "{\"max_chunk_size_tokens\", \"chunk_overlap_tokens\"}}", param="chunking_strategy")
    size, overlap = static.get("max_chunk_size_tokens", 800), static.get("chunk_overlap_tokens", 400)
    if not (isinstance(size, int) and isinstance(overlap, int) and 100 <= size <= 4096 and 0 <= overlap <= size // 2):
        raise InvalidRequest("max_chunk_size_tokens is 100..4096 and chunk_overlap_tokens at most half of it",
                             param="chunking_strategy")
    return {"max_tokens": size, "overlap_tokens": overlap}


def _ts(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def _now() -> datetime:
    return datetime.now(UTC)


def _counts(s: Session, *where: Any) -> dict[str, int]:
    rows = s.execute(select(VectorStoreFileRow.status, func.count()).where(*where)
                     .group_by(VectorStoreFileRow.status)).all()
    counts = {k: 0 for k in STATUSES} | {status: n for status, n in rows}
    return {**counts, "total": sum(counts.values())}


def file_object(row: VectorStoreFileRow) -> dict[str, Any]:
    return {"id": row.file_id, "object": "vector_store.file", "created_at": _ts(row.created_at),
            "vector_store_id": row.vector_store_id, "status": row.status, "usage_bytes": row.usage_bytes,
            "last_error": row.last_error, "attributes": row.attributes or {},
            "chunking_strategy": row.chunking_strategy or {"type": "auto"}}


class VectorStores:
    def __init__(self, db: Engine, files: FileStore, rag: Any, spawn: Spawn, new_parent: Callable[..., Any],
                 lineage: Any = None) -> None:
        self.db, self.files, self.rag, self.spawn = db, files, rag, spawn
        self.new_parent = new_parent  # a CallRecord for ingestion's embedding calls (accounted to the team)
        self.lineage = lineage
        self.running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self.gate = asyncio.Semaphore(2)  # files parsed and embedded at once

    # --- vector stores -----------------------------------------------------------------------------------------

    def _store(self, s: Session, team: str, vs_id: str) -> VectorStoreRow:
        row = s.scalar(select(VectorStoreRow).where(VectorStoreRow.id == vs_id, VectorStoreRow.team == team))
        if row is None:
            raise NotFound(f"No vector store found with id '{vs_id}'.", param="vector_store_id",
                           code="vector_store_not_found")
        return row

    def _view(self, s: Session, row: VectorStoreRow) -> dict[str, Any]:
        counts = _counts(s, VectorStoreFileRow.vector_store_id == row.id)
        used = s.scalar(select(func.coalesce(func.sum(VectorStoreFileRow.usage_bytes), 0))
                        .where(VectorStoreFileRow.vector_store_id == row.id)) or 0
        return {"id": row.id, "object": "vector_store", "created_at": _ts(row.created_at), "name": row.name or "",
                "usage_bytes": int(used), "file_counts": counts, "metadata": row.meta or {},
                "status": "in_progress" if counts["in_progress"] else "completed",
                "last_active_at": _ts(row.last_active_at), "expires_after": row.expires_after, "expires_at": None}

    async def create(self, team: str, key_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
        chunking = chunking_of(body.get("chunking_strategy"))
        vs_id = "vs_" + os.urandom(12).hex()
        coll = await self.rag.create_collection(team, body.get("name") or vs_id, chunking=chunking,
                                                metadata={"vector_store_id": vs_id})
        row = VectorStoreRow(id=vs_id, team=team, collection_id=coll.id, name=body.get("name"),
                             meta=body.get("metadata"), expires_after=body.get("expires_after"), created_at=_now(),
                             last_active_at=_now())
        await asyncio.to_thread(self._insert, row)
        for file_id in body.get("file_ids") or ():
            await self.add_file(team, key_id, vs_id, {"file_id": file_id,
                                                      "chunking_strategy": body.get("chunking_strategy")})
        return await asyncio.to_thread(self.get, team, vs_id)

    def _insert(self, row: Any) -> None:
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            s.add(row)

    def get(self, team: str, vs_id: str) -> dict[str, Any]:
        with Session(self.db) as s:
            return self._view(s, self._store(s, team, vs_id))

    def collection_of(self, team: str, vs_id: str) -> str:
        with Session(self.db) as s:
            return self._store(s, team, vs_id).collection_id

    def collection_named(self, team: str, ref: str) -> str:
        """A route's ``rag.vector_stores`` entry: an id (vs_...) or a name, the team's newest store of that name
        (so one route serves every team from its own store)."""
        if ref.startswith("vs_"):
            return self.collection_of(team, ref)
        with Session(self.db) as s:
            coll = s.scalar(select(VectorStoreRow.collection_id).where(VectorStoreRow.team == team,
                                                                       VectorStoreRow.name == ref)
                            .order_by(VectorStoreRow.seq.desc()).limit(1))
        if coll is None:
            raise NotFound(f"No vector store named {ref!r} in this key's team.", code="vector_store_not_found")
        return coll

    def list_stores(self, team: str, limit: int, after: str | None, order: str) -> tuple[list[dict[str, Any]], bool]:
        with Session(self.db) as s:
            q = select(VectorStoreRow).where(VectorStoreRow.team == team)
            if after:
                cursor = self._store(s, team, after).seq
                q = q.where(VectorStoreRow.seq < cursor if order == "desc" else VectorStoreRow.seq > cursor)
            rows = list(s.scalars(q.order_by(VectorStoreRow.seq.desc() if order == "desc" else VectorStoreRow.seq)
                                  .limit(limit + 1)))
            return [self._view(s, r) for r in rows[:limit]], len(rows) > limit

    def modify(self, team: str, vs_id: str, body: dict[str, Any]) -> dict[str, Any]:
        with Session(self.db) as s, s.begin():
            row = self._store(s, team, vs_id)
            if "name" in body:
                row.name = body["name"]
            if "metadata" in body:
                row.meta = body["metadata"]
            if "expires_after" in body:
                row.expires_after = body["expires_after"]
            s.flush()
            return self._view(s, row)

    async def delete(self, team: str, vs_id: str) -> None:
        coll = await asyncio.to_thread(self.collection_of, team, vs_id)
        for (store, _), task in list(self.running.items()):
            if store == vs_id:
                task.cancel()
        await self.rag.delete_collection(team, coll)
        await asyncio.to_thread(self._delete_rows, vs_id)

    def _delete_rows(self, vs_id: str) -> None:
        with Session(self.db) as s, s.begin():
            s.execute(delete(VectorStoreFileRow).where(VectorStoreFileRow.vector_store_id == vs_id))
            s.execute(delete(FileBatchRow).where(FileBatchRow.vector_store_id == vs_id))
            s.execute(delete(VectorStoreRow).where(VectorStoreRow.id == vs_id))

    # --- files -------------------------------------------------------------------------------------------------

    async def add_file(self, team: str, key_id: str | None, vs_id: str, body: dict[str, Any],
                       batch_id: str | None = None) -> dict[str, Any]:
        file_id = body.get("file_id")
        if not isinstance(file_id, str) or not file_id:
            raise InvalidRequest("file_id is required", param="file_id", code="missing_required_parameter")
        attributes = body.get("attributes") or {}
        if not isinstance(attributes, dict):
            raise InvalidRequest("attributes is an object of strings, numbers and booleans", param="attributes")
        acl = acl_of(attributes)
        chunking_of(body.get("chunking_strategy"))  # checked; the collection's chunking applies
        coll = await asyncio.to_thread(self.collection_of, team, vs_id)
        await asyncio.to_thread(self.files.get, team, file_id)  # another team's file is a 404
        row = VectorStoreFileRow(vector_store_id=vs_id, file_id=file_id, team=team, batch_id=batch_id,
                                 status="in_progress", usage_bytes=0, attributes=attributes,
                                 chunking_strategy=body.get("chunking_strategy") or {"type": "auto"},
                                 created_at=_now())
        view = await asyncio.to_thread(self._upsert_file, row)
        key = (vs_id, file_id)
        old = self.running.pop(key, None)
        if old is not None:
            old.cancel()
        task = self.spawn(self._ingest(team, key_id, vs_id, coll, file_id, acl, attributes))
        self.running[key] = task
        task.add_done_callback(lambda t: self.running.pop(key, None) if self.running.get(key) is t else None)
        return view

    def _upsert_file(self, row: VectorStoreFileRow) -> dict[str, Any]:
        with Session(self.db) as s, s.begin():
            s.execute(delete(VectorStoreFileRow).where(VectorStoreFileRow.vector_store_id == row.vector_store_id,
                                                       VectorStoreFileRow.file_id == row.file_id))
            s.add(row)
            s.flush()
            return file_object(row)

    async def _ingest(self, team: str, key_id: str | None, vs_id: str, coll: str, file_id: str,
                      acl: list[str] | None, attributes: dict[str, Any]) -> None:
        status, error, used = "failed", None, 0
        try:
            async with self.gate:
                obj, content = await asyncio.to_thread(self.files.read, team, file_id)
                parent = self.new_parent(team, key_id, file_id)
                doc = await self.rag.add_document(team, coll, name=obj["filename"], content=content, acl=acl,
                                                  attributes=attributes, document_id=file_id,
                                                  source={"file_id": file_id, "vector_store_id": vs_id},
                                                  parent=parent)
            status, used = "completed", len(content)
            if self.lineage is not None:
                from strata.data.lineage import Edge

                edge = Edge("file", file_id, "document", f"{coll}/{doc.id}", "ingested")
                await asyncio.to_thread(self.lineage.add, [edge], team)
            log.info("vector store %s: file %s ingested (%d chunks, %s)", vs_id, file_id, doc.chunk_count, doc.status)
        except asyncio.CancelledError:
            status, error = "cancelled", None
            raise
        except StrataError as exc:
            error = {"code": "invalid_file" if exc.status < 500 else "server_error", "message": exc.message}
            log.warning("vector store %s: file %s failed: %s", vs_id, file_id, exc.message)
        except Exception as exc:  # a parser's or index's own error: the file fails, the gateway goes on
            error = {"code": "server_error", "message": f"{type(exc).__name__}: {exc}"}
            log.exception("vector store %s: file %s failed", vs_id, file_id)
        finally:
            await asyncio.shield(asyncio.to_thread(self._finish, vs_id, file_id, status, error, used))

    def _finish(self, vs_id: str, file_id: str, status: str, error: dict[str, Any] | None, used: int) -> None:
        with Session(self.db) as s, s.begin():
            row = s.scalar(select(VectorStoreFileRow).where(VectorStoreFileRow.vector_store_id == vs_id,
                                                            VectorStoreFileRow.file_id == file_id))
            if row is not None and row.status == "in_progress":
                row.status, row.last_error, row.usage_bytes = status, error, used
            store = s.scalar(select(VectorStoreRow).where(VectorStoreRow.id == vs_id))
            if store is not None:
                store.last_active_at = _now()

    def _file(self, s: Session, team: str, vs_id: str, file_id: str) -> VectorStoreFileRow:
        self._store(s, team, vs_id)
        row = s.scalar(select(VectorStoreFileRow).where(VectorStoreFileRow.vector_store_id == vs_id,
                                                        VectorStoreFileRow.file_id == file_id))
        if row is None:
            raise NotFound(f"No file found with id '{file_id}' in vector store '{vs_id}'.", param="file_id",
                           code="file_not_found")
        return row

    def get_file(self, team: str, vs_id: str, file_id: str) -> dict[str, Any]:
        with Session(self.db) as s:
            return file_object(self._file(s, team, vs_id, file_id))

    def list_files(self, team: str, vs_id: str, limit: int, after: str | None, order: str,
                   status: str | None = None, batch_id: str | None = None) -> tuple[list[dict[str, Any]], bool]:
        with Session(self.db) as s:
            self._store(s, team, vs_id)
            q = select(VectorStoreFileRow).where(VectorStoreFileRow.vector_store_id == vs_id)
            if status:
                q = q.where(VectorStoreFileRow.status == status)
            if batch_id:
                q = q.where(VectorStoreFileRow.batch_id == batch_id)
            if after:
                cursor = self._file(s, team, vs_id, after).seq
                q = q.where(VectorStoreFileRow.seq < cursor if order == "desc" else VectorStoreFileRow.seq > cursor)
            rows = list(s.scalars(q.order_by(VectorStoreFileRow.seq.desc() if order == "desc"
                                             else VectorStoreFileRow.seq).limit(limit + 1)))
            return [file_object(r) for r in rows[:limit]], len(rows) > limit

    def update_file(self, team: str, vs_id: str, file_id: str, attributes: dict[str, Any]) -> dict[str, Any]:
        """Attributes only (OpenAI's update); a changed ACL needs the file re-added."""
        with Session(self.db) as s, s.begin():
            row = self._file(s, team, vs_id, file_id)
            row.attributes = attributes
            s.flush()
            return file_object(row)

    async def remove_file(self, team: str, vs_id: str, file_id: str) -> None:
        coll = await asyncio.to_thread(self.collection_of, team, vs_id)
        await asyncio.to_thread(self.get_file, team, vs_id, file_id)
        task = self.running.pop((vs_id, file_id), None)
        if task is not None:
            task.cancel()
        try:
            await self.rag.remove_document(team, coll, file_id)
        except NotFound:
            pass  # never ingested (failed or cancelled)
        await asyncio.to_thread(self._delete_file, vs_id, file_id)

    def _delete_file(self, vs_id: str, file_id: str) -> None:
        with Session(self.db) as s, s.begin():
            s.execute(delete(VectorStoreFileRow).where(VectorStoreFileRow.vector_store_id == vs_id,
                                                       VectorStoreFileRow.file_id == file_id))

    async def ingest_dataset(self, team: str, vs_id: str, version: Any, parent: Any) -> dict[str, Any]:
        """Make the store hold a dataset version's document records (incremental: only changed records are
        parsed and embedded; records gone from the version are removed)."""
        coll = await asyncio.to_thread(self.collection_of, team, vs_id)
        report = await self.rag.ingest_dataset(team, coll, version, parent=parent)
        out: dict[str, Any] = report.view()
        return out

    # --- search ------------------------------------------------------------------------------------------------

    async def search(self, team: str, vs_ids: list[str], query: str, reader: Reader, *, k: int,
                     filters: dict[str, Any] | None = None, mode: str = "hybrid", parent: Any = None) -> list[Any]:
        """Hits (``rag.service.Hit``) the caller may read, from the team's vector stores ``vs_ids``."""
        if filters is not None:
            check_filters(filters)
        colls = [await asyncio.to_thread(self.collection_of, team, v) for v in vs_ids]
        hits: list[Any] = await self.rag.search(team, colls, query, reader, k=k, mode=mode, filters=filters,
                                                parent=parent)
        return hits

    def store_of_collection(self, team: str) -> dict[str, str]:
        """collection id -> vector store id, for the team."""
        with Session(self.db) as s:
            rows = s.execute(select(VectorStoreRow.collection_id, VectorStoreRow.id)
                             .where(VectorStoreRow.team == team)).all()
            return {c: v for c, v in rows}
