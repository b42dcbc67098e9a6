"""Tables of drift detection (migration 0012): sampled observations, registered baselines, latest reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from strata.store.tables import Base, id_column


class DriftSample(Base):
    """One observed request (``kind`` request: scalars and prompt/answer embeddings) or retrieved chunk
    (``kind`` retrieved: its embedding only). Embeddings are float16 bytes (768 bytes for MiniLM); no text."""

    __tablename__ = "drift_samples"

    id: Mapped[int] = id_column()
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    route: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # request | retrieved
    deployment: Mapped[str | None] = mapped_column(String(200), nullable=True)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    answer_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    refusal: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    tool_call: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    language: Mapped[str | None] = mapped_column(String(8), nullable=True)
    prompt_vec: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    answer_vec: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    retrieved_vec: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)

    __table_args__ = (Index("ix_drift_samples_route_at", "route", "at"), Index("ix_drift_samples_at", "at"))


class DriftBaseline(Base):
    """A route's registered reference window (``strata drift baseline set``)."""

    __tablename__ = "drift_baselines"

    route: Mapped[str] = mapped_column(String(200), primary_key=True)
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str | None] = mapped_column(String(200), nullable=True)


class DriftReportRow(Base):
    """The latest drift report of a route; ``detected``: the route is in a drift episode (so the next check,
    by any replica, knows whether drift is new)."""

    __tablename__ = "drift_reports"

    route: Mapped[str] = mapped_column(String(200), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detected: Mapped[bool] = mapped_column(Boolean, default=False)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
