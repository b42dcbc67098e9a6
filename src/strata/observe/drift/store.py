"""Drift rows in the database: observations (written in batches, read per window), baselines, latest reports,
retention. Synchronous (SQLAlchemy); callers on the event loop use ``asyncio.to_thread``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import CursorResult, Engine, delete, func, insert, select
from sqlalchemy.orm import Session

from strata.observe.drift.tables import DriftBaseline, DriftReportRow, DriftSample

VEC_DTYPE = np.float16


def pack(vector: list[float] | None) -> bytes | None:
    return None if vector is None else np.asarray(vector, dtype=VEC_DTYPE).tobytes()


def unpack(rows: list[bytes]) -> np.ndarray:
    if not rows:
        return np.zeros((0, 0))
    return np.stack([np.frombuffer(b, dtype=VEC_DTYPE) for b in rows]).astype(np.float64)


def utc(at: datetime) -> datetime:
    """SQLite gives naive datetimes back: they are UTC."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass
class Window:
    """The observations of one route in [start, end): what the tests compare."""

    start: datetime
    end: datetime
    n: int = 0
    prompt_tokens: list[int] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)
    refusals: list[bool] = field(default_factory=list)
    tool_calls: list[bool] = field(default_factory=list)
    languages: Counter[str] = field(default_factory=Counter)
    deployments: Counter[str] = field(default_factory=Counter)  # observations per deployment (model version)
    vectors: dict[str, list[bytes]] = field(default_factory=lambda: {"prompt": [], "answer": [], "retrieved": []})

    def span(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "n": self.n,
                "deployments": dict(sorted(self.deployments.items()))}


class DriftStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, rows: list[dict[str, Any]]) -> None:
        if rows:
            with Session(self.engine) as s, s.begin():
                s.execute(insert(DriftSample), rows)

    def window(self, route: str, start: datetime, end: datetime, max_rows: int,
               deployment: str | None = None) -> Window:
        """The route's observations in [start, end); ``deployment``: only those that deployment answered
        (retrieved chunks, which belong to no deployment, are then left out)."""
        q = (select(DriftSample.kind, DriftSample.prompt_tokens, DriftSample.answer_tokens, DriftSample.refusal,
                    DriftSample.tool_call, DriftSample.language, DriftSample.prompt_vec, DriftSample.answer_vec,
                    DriftSample.retrieved_vec, DriftSample.deployment)
             .where(DriftSample.route == route, DriftSample.at >= start, DriftSample.at < end)
             .order_by(DriftSample.at.desc()).limit(max_rows))
        if deployment is not None:
            q = q.where(DriftSample.deployment == deployment)
        w = Window(start, end)
        with self.engine.connect() as conn:
            for kind, pt, at, refusal, tool, lang, pv, av, rv, dep in conn.execute(q):
                if kind == "retrieved":
                    if rv is not None:
                        w.vectors["retrieved"].append(rv)
                    continue
                w.n += 1
                w.deployments[dep or "-"] += 1
                if pt is not None:
                    w.prompt_tokens.append(pt)
                if at is not None:
                    w.answer_tokens.append(at)
                if refusal is not None:
                    w.refusals.append(bool(refusal))
                if tool is not None:
                    w.tool_calls.append(bool(tool))
                if lang is not None:
                    w.languages[lang] += 1
                for name, vec in (("prompt", pv), ("answer", av)):
                    if vec is not None:
                        w.vectors[name].append(vec)
        return w

    def count(self, route: str, start: datetime, end: datetime) -> int:
        q = select(func.count()).where(DriftSample.route == route, DriftSample.kind == "request",
                                         DriftSample.at >= start, DriftSample.at < end)
        with self.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    def deployments(self, route: str) -> set[str]:
        """The deployments with observations of the route (a rolled-back canary's included)."""
        q = select(DriftSample.deployment).where(DriftSample.route == route).distinct()
        with self.engine.connect() as conn:
            return {d for (d,) in conn.execute(q) if d is not None}

    def routes(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(r for (r,) in conn.execute(select(DriftSample.route).distinct()))

    def purge(self, before: datetime) -> int:
        with Session(self.engine) as s, s.begin():
            result: CursorResult[Any] = s.execute(delete(DriftSample).where(DriftSample.at < before))  # type: ignore[assignment]
            return result.rowcount or 0

    def baseline(self, route: str) -> dict[str, Any] | None:
        with Session(self.engine) as s:
            row = s.get(DriftBaseline, route)
            if row is None:
                return None
            return {"route": route, "from": utc(row.start).isoformat(), "to": utc(row.end).isoformat(),
                    "created_at": utc(row.created_at).isoformat(), "actor": row.actor}

    def set_baseline(self, route: str, start: datetime, end: datetime, actor: str | None) -> None:
        with Session(self.engine) as s, s.begin():
            s.merge(DriftBaseline(route=route, start=start, end=end, created_at=datetime.now(UTC), actor=actor))

    def clear_baseline(self, route: str) -> bool:
        with Session(self.engine) as s, s.begin():
            result: CursorResult[Any] = s.execute(delete(DriftBaseline).where(DriftBaseline.route == route))  # type: ignore[assignment]
            return bool(result.rowcount)

    def save_report(self, route: str, report: dict[str, Any], episode: bool) -> None:
        """The route's latest report; ``episode``: the route is in a drift episode (its onset was announced)."""
        with Session(self.engine) as s, s.begin():
            s.merge(DriftReportRow(route=route, at=datetime.fromisoformat(report["at"]), detected=episode,
                                   report=report))

    def reports(self, route: str | None = None) -> list[dict[str, Any]]:
        q = select(DriftReportRow.report).order_by(DriftReportRow.route)
        if route is not None:
            q = q.where(DriftReportRow.route == route)
        with self.engine.connect() as conn:
            return [r for (r,) in conn.execute(q)]

    def detected_routes(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r for (r,) in conn.execute(select(DriftReportRow.route).where(DriftReportRow.detected))}
