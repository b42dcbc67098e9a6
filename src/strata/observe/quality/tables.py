"""The ``quality_scores`` table: one row per score of a served request, sampled (a scorer's) or feedback
(``/v1/feedback``'s, in that score's own range)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from strata.store.tables import Base, id_column


class QualityScore(Base):
    __tablename__ = "quality_scores"

    id: Mapped[int] = id_column()
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str] = mapped_column(String(128), index=True)  # joins the ledger row(s) of the request
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    route: Mapped[str] = mapped_column(String(200))
    deployment: Mapped[str | None] = mapped_column(String(200), nullable=True)
    team: Mapped[str | None] = mapped_column(String(200), nullable=True)  # of the key that made the request
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    scorer: Mapped[str] = mapped_column(String(64))  # judge, refusal, ...; feedback: the feedback's name
    scorer_version: Mapped[str | None] = mapped_column(String(128), nullable=True)  # judge: RUBRIC@VERSION
    value: Mapped[float] = mapped_column(Float)  # sampled: 0..1, higher is better; feedback: as given
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rationale: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    source: Mapped[str] = mapped_column(String(16))  # sampled | feedback

    __table_args__ = (Index("ix_quality_scores_route_at", "route", "at"), Index("ix_quality_scores_at", "at"))
