"""The ``files`` table: metadata of uploaded files (the content lives in the file storage)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, String
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
