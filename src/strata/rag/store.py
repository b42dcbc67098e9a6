"""RAG metadata in the database (synchronous; the service calls it off the event loop)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import Engine, delete, func, select
from sqlalchemy.orm import Session

from strata.errors import NotFound
from strata.rag.index.base import IndexedChunk
from strata.rag.tables import RagChunk, RagCollection, RagDocument

READ_BATCH = 2000


def chunk_id(key: int) -> str:
    return f"chunk-{key}"


def chunk_key(ident: str) -> int:
    prefix, _, number = ident.partition("-")
    if prefix != "chunk" or not number.isdigit():
        raise NotFound(f"no chunk {ident!r}")
    return int(number)


def indexed_text(text: str, heading: str | None, include_heading: bool) -> str:
    return f"{heading}\n\n{text}" if include_heading and heading else text


def now() -> datetime:
    return datetime.now(UTC)


class RagStore:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def collection(self, team: str | None, collection_id: str) -> RagCollection:
        with Session(self.db, expire_on_commit=False) as s:
            row = s.get(RagCollection, collection_id)
            if row is None or (team is not None and row.team != team):
                raise NotFound(f"no collection {collection_id!r}", param="collection_id")
            return row

    def counts(self, collection_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        with Session(self.db) as s:
            rows = s.execute(select(RagDocument.collection_id, func.count(), func.coalesce(
                func.sum(RagDocument.chunk_count), 0)).where(RagDocument.collection_id.in_(collection_ids))
                .group_by(RagDocument.collection_id)).all()
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def add_collection(self, row: RagCollection) -> None:
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            s.add(row)

    def list_collections(self, team: str) -> list[RagCollection]:
        with Session(self.db, expire_on_commit=False) as s:
            return list(s.scalars(select(RagCollection).where(RagCollection.team == team)
                                  .order_by(RagCollection.created_at)))

    def set_dim(self, collection_id: str, dim: int) -> None:
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            row = s.get(RagCollection, collection_id)
            if row is not None and row.dim is None:
                row.dim = dim

    def drop_collection(self, collection_id: str) -> None:
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            s.execute(delete(RagChunk).where(RagChunk.collection_id == collection_id))
            s.execute(delete(RagDocument).where(RagDocument.collection_id == collection_id))
            s.execute(delete(RagCollection).where(RagCollection.id == collection_id))

    def document(self, collection_id: str, document_id: str) -> RagDocument | None:
        with Session(self.db, expire_on_commit=False) as s:
            return s.get(RagDocument, (collection_id, document_id))

    def documents(self, collection_id: str) -> list[RagDocument]:
        with Session(self.db, expire_on_commit=False) as s:
            return list(s.scalars(select(RagDocument).where(RagDocument.collection_id == collection_id)
                                  .order_by(RagDocument.created_at, RagDocument.id)))

    def chunk_vectors(self, collection_id: str, document_id: str) -> list[RagChunk]:
        with Session(self.db, expire_on_commit=False) as s:
            return list(s.scalars(select(RagChunk).where(RagChunk.collection_id == collection_id,
                                                         RagChunk.document_id == document_id)
                                  .order_by(RagChunk.ordinal)))

    def replace_document(self, doc: RagDocument, chunks: list[RagChunk]) -> list[int]:
        """The document's row and its chunks, in one transaction; returns the new chunks' keys."""
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            s.execute(delete(RagChunk).where(RagChunk.collection_id == doc.collection_id,
                                             RagChunk.document_id == doc.id))
            s.merge(doc)
            s.add_all(chunks)
            s.flush()
            return [c.key for c in chunks]

    def update_document(self, doc: RagDocument) -> None:
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            s.merge(doc)

    def remove_document(self, collection_id: str, document_id: str) -> bool:
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            s.execute(delete(RagChunk).where(RagChunk.collection_id == collection_id,
                                             RagChunk.document_id == document_id))
            result = s.execute(delete(RagDocument).where(RagDocument.collection_id == collection_id,
                                                         RagDocument.id == document_id))
            return bool(getattr(result, "rowcount", 0))

    def chunks_by_key(self, keys: Sequence[int]) -> dict[int, tuple[RagChunk, RagDocument]]:
        if not keys:
            return {}
        with Session(self.db, expire_on_commit=False) as s:
            rows = s.execute(select(RagChunk, RagDocument).join(RagDocument, (RagDocument.collection_id ==
                             RagChunk.collection_id) & (RagDocument.id == RagChunk.document_id))
                             .where(RagChunk.key.in_(list(keys)))).all()
        return {c.key: (c, d) for c, d in rows}


class DbChunkSource:
    """A collection's chunks as its index backend needs them (``index.base.ChunkSource``)."""

    def __init__(self, db: Engine, collection_id: str, include_heading: bool) -> None:
        self.db, self.collection_id, self.include_heading = db, collection_id, include_heading

    def _rows(self, *cols: Any) -> Iterator[Any]:
        last = -1
        while True:
            with Session(self.db) as s:
                rows = s.execute(select(*cols, RagDocument.acl).join(RagDocument, (
                    RagDocument.collection_id == RagChunk.collection_id) & (RagDocument.id == RagChunk.document_id))
                    .where(RagChunk.collection_id == self.collection_id, RagChunk.key > last)
                    .order_by(RagChunk.key).limit(READ_BATCH)).all()
            if not rows:
                return
            yield from rows
            last = rows[-1][0]

    def acl_rows(self) -> Iterator[tuple[int, str, Sequence[str]]]:
        for key, doc, acl in self._rows(RagChunk.key, RagChunk.document_id):
            yield int(key), doc, acl

    def chunks(self) -> Iterator[IndexedChunk]:
        for key, doc, text, heading, vector, attributes, acl in self._rows(
                RagChunk.key, RagChunk.document_id, RagChunk.text, RagChunk.heading, RagChunk.vector,
                RagDocument.attributes):
            yield IndexedChunk(int(key), doc, indexed_text(text, heading, self.include_heading), acl,
                               np.frombuffer(vector, dtype="<f4"), attributes or {})
