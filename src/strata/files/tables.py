"""Tables of the OpenAI resources: ``files`` (metadata; the content lives in the file storage), vector stores,
their files and file batches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from strata.store.tables import Base, id_column


class StoredFile(Base):
    """One uploaded file; ``seq`` orders listings (ids are random)."""

    __tablename__ = "files"

    seq: Mapped[int] = id_column()
    id: Mapped[str] = mapped_column(String(40), unique=True)
    team: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(32))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_files_team_seq", "team", "seq"),)


class VectorStoreRow(Base):
    """An OpenAI vector store: a RAG collection (``rag``) of the team, with OpenAI's metadata."""

    __tablename__ = "vector_stores"

    seq: Mapped[int] = id_column()
    id: Mapped[str] = mapped_column(String(40), unique=True)
    team: Mapped[str] = mapped_column(String(200))
    collection_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(500), nullable=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)
    expires_after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_active_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    __table_args__ = (Index("ix_vector_stores_team_seq", "team", "seq"),)


class VectorStoreFileRow(Base):
    """A file in a vector store: its ingestion status; the document in the collection has the file's id."""

    __tablename__ = "vector_store_files"

    seq: Mapped[int] = id_column()
    vector_store_id: Mapped[str] = mapped_column(String(40))
    file_id: Mapped[str] = mapped_column(String(40))
    team: Mapped[str] = mapped_column(String(200))
    batch_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    document_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # in_progress, completed, cancelled, failed
    usage_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    chunking_strategy: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (UniqueConstraint("vector_store_id", "file_id", name="uq_vector_store_files"),)


class FileBatchRow(Base):
    """A batch of files added to a vector store at once; its counts come from its files' rows."""

    __tablename__ = "vector_store_file_batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    vector_store_id: Mapped[str] = mapped_column(String(40), index=True)
    team: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # in_progress, completed, cancelled, failed
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
