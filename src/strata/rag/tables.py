"""RAG metadata: collections, documents (content hash, ACL), chunks (text, offsets, vector). The index files are
derived from these rows and can be rebuilt from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from strata.store.tables import Base, id_column


class RagCollection(Base):
    __tablename__ = "rag_collections"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    team: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(500))
    backend: Mapped[str] = mapped_column(String(32))
    dim: Mapped[int | None] = mapped_column(Integer, nullable=True)  # set by the first embedded chunk
    chunking: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RagDocument(Base):
    __tablename__ = "rag_documents"

    collection_id: Mapped[str] = mapped_column(String(40), ForeignKey("rag_collections.id", ondelete="CASCADE"),
                                               primary_key=True)
    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    team: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(500))
    media_type: Mapped[str] = mapped_column(String(100))
    content_hash: Mapped[str] = mapped_column(String(64))
    acl: Mapped[list[str]] = mapped_column(JSON)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    source: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    chunk_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RagChunk(Base):
    __tablename__ = "rag_chunks"

    key: Mapped[int] = id_column()  # the chunk's key in every index; its public id is ``chunk-<key>``
    collection_id: Mapped[str] = mapped_column(String(40))
    document_id: Mapped[str] = mapped_column(String(200))
    ordinal: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    heading: Mapped[str | None] = mapped_column(Text, nullable=True)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian

    __table_args__ = (Index("ix_rag_chunks_doc", "collection_id", "document_id"),)


__all__ = ["RagChunk", "RagCollection", "RagDocument"]
