"""Eval runs and per-case results in the database. A result is written as soon as its case finishes, so an
interrupted run resumes: a re-run with the same run id scores only the cases it has no result for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strata.errors import InvalidRequest, NotFound
from strata.evals.tables import EvalResult, EvalRun
from strata.store.tables import LedgerRow


@dataclass(frozen=True, slots=True)
class CaseResult:
    case_id: str
    output: str | None
    error: str | None
    scores: dict[str, float | None]
    details: dict[str, str]
    passed: bool
    latency_s: float
    tokens: int | None
    request_id: str | None


def _at(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def run_view(run: EvalRun) -> dict[str, Any]:
    return {"id": run.id, "suite": run.suite, "target": run.target, "route": run.route,
            "model_version": run.model_version, "baseline": run.baseline, "status": run.status,
            "cases": run.cases_total, "summary": run.summary, "created_at": _at(run.created_at),
            "finished_at": _at(run.finished_at), "created_by": run.created_by,
            "rubrics": run.suite_spec.get("rubrics"), "cases_hash": run.suite_spec.get("cases_hash")}


def result_view(r: EvalResult) -> dict[str, Any]:
    return {"case_id": r.case_id, "passed": r.passed, "scores": r.scores, "details": r.details,
            "output": r.output, "error": r.error, "latency_s": r.latency_s, "cost_usd": r.cost_usd,
            "tokens": r.tokens, "request_id": r.request_id}


class EvalStore:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def start(self, run_id: str, suite: str, spec: dict[str, Any], target: str, route: str, model_version: str | None,
              baseline: str | None, cases: int, actor: str) -> tuple[dict[str, Any], set[str]]:
        """Create the run, or resume it: the same suite and cases, the ids of the cases already done."""
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            run = s.get(EvalRun, run_id)
            if run is None:
                run = EvalRun(id=run_id, suite=suite, suite_spec=spec, target=target, route=route,
                              model_version=model_version, baseline=baseline, status="running", cases_total=cases,
                              created_at=datetime.now(UTC), created_by=actor)
                s.add(run)
                return run_view(run), set()
            if run.suite != suite or run.suite_spec.get("cases_hash") != spec.get("cases_hash"):
                raise InvalidRequest(f"run {run_id} was made with other cases or another suite ({run.suite}); "
                                     "use a new run id", param="run_id")
            if run.target != target:
                raise InvalidRequest(f"run {run_id} targets {run.target}, not {target}", param="target")
            run.status = "running"
            done = set(s.scalars(select(EvalResult.case_id).where(EvalResult.run_id == run_id)))
            return run_view(run), done

    def record(self, run_id: str, r: CaseResult) -> None:
        row = EvalResult(run_id=run_id, case_id=r.case_id, output=r.output, error=r.error, scores=r.scores,
                         details=r.details, passed=r.passed, latency_s=r.latency_s, tokens=r.tokens,
                         request_id=r.request_id, finished_at=datetime.now(UTC))
        try:
            with Session(self.db) as s, s.begin():
                s.add(row)
        except IntegrityError:
            pass  # the same case finished by an overlapping resume: the first result stands

    def finish(self, run_id: str, summary: dict[str, Any], status: str = "finished") -> dict[str, Any]:
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            run = self._run(s, run_id)
            run.status, run.summary, run.finished_at = status, summary, datetime.now(UTC)
        return run_view(run)

    def fill_costs(self, run_id: str) -> int:
        """Each case's cost from its ledger row (the gateway priced it); returns how many were found."""
        with Session(self.db) as s, s.begin():
            results = list(s.scalars(select(EvalResult).where(EvalResult.run_id == run_id,
                                                              EvalResult.request_id.is_not(None))))
            ids = [r.request_id for r in results]
            costs: dict[str, float] = {}
            for start in range(0, len(ids), 500):
                for rid, cost in s.execute(select(LedgerRow.request_id, LedgerRow.cost_usd)
                                           .where(LedgerRow.request_id.in_(ids[start:start + 500]))):
                    costs[rid] = costs.get(rid, 0.0) + (cost or 0.0)
            for r in results:
                if r.request_id in costs:
                    r.cost_usd = costs[r.request_id]
            return len(costs)

    def _run(self, s: Session, run_id: str) -> EvalRun:
        run = s.get(EvalRun, run_id)
        if run is None:
            raise NotFound(f"no eval run {run_id!r}", param="run_id", code="eval_run_not_found")
        return run

    def get(self, run_id: str) -> dict[str, Any]:
        with Session(self.db) as s:
            return run_view(self._run(s, run_id))

    def results(self, run_id: str) -> list[dict[str, Any]]:
        with Session(self.db) as s:
            self._run(s, run_id)
            q = select(EvalResult).where(EvalResult.run_id == run_id).order_by(EvalResult.id)
            return [result_view(r) for r in s.scalars(q)]

    def runs(self, suite: str | None = None, target: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        q = select(EvalRun).order_by(EvalRun.created_at.desc()).limit(limit)
        if suite:
            q = q.where(EvalRun.suite == suite)
        if target:
            q = q.where(EvalRun.target == target)
        with Session(self.db) as s:
            return [run_view(r) for r in s.scalars(q)]

    def latest(self, suite: str, targets: list[str]) -> dict[str, Any] | None:
        """The newest finished run of ``suite`` against any of ``targets``."""
        if not targets:
            return None
        q = (select(EvalRun).where(EvalRun.suite == suite, EvalRun.status == "finished",
                                   EvalRun.target.in_(targets)).order_by(EvalRun.finished_at.desc()).limit(1))
        with Session(self.db) as s:
            run = s.scalar(q)
            return run_view(run) if run else None
