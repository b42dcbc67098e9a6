"""Eval tables: runs and their per-case results (written as each case finishes, so a run resumes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from strata.store.tables import Base, id_column


class EvalRun(Base):
    """One run of a suite against a target; ``suite_spec`` is the suite as it was run (cases' hash, scorers,
    rubric versions), ``model_version`` the registry version the target served (``name@N``) when known."""

    __tablename__ = "eval_runs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    suite: Mapped[str] = mapped_column(String(200), index=True)
    suite_spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    target: Mapped[str] = mapped_column(String(300))
    route: Mapped[str] = mapped_column(String(300))
    model_version: Mapped[str | None] = mapped_column(String(300), nullable=True, index=True)
    baseline: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(20))  # running, finished, failed
    cases_total: Mapped[int] = mapped_column(Integer)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_by: Mapped[str] = mapped_column(String(200))


class EvalResult(Base):
    __tablename__ = "eval_results"
    __table_args__ = (UniqueConstraint("run_id", "case_id", name="ux_eval_results_run_case"),)

    id: Mapped[int] = id_column()
    run_id: Mapped[str] = mapped_column(String(64), index=True)
    case_id: Mapped[str] = mapped_column(String(200))
    output: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # scorer -> 0..1
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # scorer -> rationale / why
    passed: Mapped[bool] = mapped_column(Boolean)
    latency_s: Mapped[float] = mapped_column(Float)
    cost_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
