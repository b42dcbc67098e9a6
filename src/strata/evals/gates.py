"""Eval gates: a canary may start, step up or be promoted only when the newest run of the gate's suite
against the canary's version passes the gate's thresholds and is not significantly worse than the newest
run against what serves now (the baseline).

A gate checks recorded runs; it does not run the suite itself (``strata evals run SUITE --target
registry:NAME@N`` does, through the gateway, before the rollout). A run counts for a canary when it targeted
the registry version the canary serves (``registry:NAME@N``) or the canary deployment itself
(``deployment:NAME``); the baseline likewise for the primaries, or ``route:ROUTE``. Every decision is in the
audit trail (``eval_gate.passed`` / ``eval_gate.refused``, with the failing cases).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine as DbEngine

from strata.evals.config import GateConfig
from strata.evals.stats import compare_runs
from strata.evals.store import EvalStore
from strata.observe.audit import AuditLog
from strata.registry.resolve import follows, version_ref
from strata.registry.store import PREFIX
from strata.routing.config import DeploymentConfig, RouteConfig
from strata.routing.rollout import GateRefused

log = logging.getLogger(__name__)
MAX_NAMED = 10  # failing cases named in a refusal's message (all of them are in the audit entry)


@dataclass(slots=True)
class Verdict:
    passed: bool
    problems: list[str] = field(default_factory=list)
    failing_cases: list[str] = field(default_factory=list)
    candidate_run: str | None = None
    baseline_run: str | None = None

    def view(self) -> dict[str, Any]:
        return {"passed": self.passed, "problems": self.problems, "failing_cases": self.failing_cases,
                "candidate_run": self.candidate_run, "baseline_run": self.baseline_run}


def targets_of(db: DbEngine, deps: list[DeploymentConfig]) -> list[str]:
    out = []
    for d in deps:
        if (ref := version_ref(db, d)) is not None:
            out.append(f"{PREFIX}{ref}")
        out.append(f"deployment:{d.name}")
    return out


def judge(gate: GateConfig, candidate: dict[str, Any] | None, candidate_results: list[dict[str, Any]],
          baseline: dict[str, Any] | None, baseline_results: list[dict[str, Any]], wanted: str) -> Verdict:
    """The gate's verdict on recorded results (pure: the unit under the gate)."""
    if candidate is None:
        return Verdict(False, [f"no finished run of suite {gate.suite!r} against {wanted}: run `strata evals run "
                               f"{gate.suite} --target {wanted}` first"])
    verdict = Verdict(True, candidate_run=candidate["id"], baseline_run=baseline["id"] if baseline else None)
    failing: set[str] = set()
    for metric, threshold in gate.thresholds.items():
        if metric == "pass_rate":
            rate = sum(r["passed"] for r in candidate_results) / max(1, len(candidate_results))
            if rate < threshold:
                verdict.problems.append(f"pass_rate {rate:.3f} < {threshold:g}")
                failing |= {r["case_id"] for r in candidate_results if not r["passed"]}
            continue
        scored = [(r["case_id"], r["scores"].get(metric)) for r in candidate_results]
        values = [v for _, v in scored if v is not None]
        if not values:
            verdict.problems.append(f"{metric}: no case was scored by it")
            continue
        mean = sum(values) / len(values)
        if mean < threshold:
            verdict.problems.append(f"{metric} mean {mean:.3f} < {threshold:g}")
            failing |= {cid for cid, v in scored if v is not None and v < threshold}
    if gate.not_worse and baseline is not None:
        for m in compare_runs(candidate_results, baseline_results, gate.confidence):
            if m.worse and m.metric != "latency_s":
                verdict.problems.append(f"{m.metric} significantly worse than the baseline run {baseline['id']} "
                                        f"({m.candidate_mean} vs {m.baseline_mean}, {m.test} p={m.p_worse:.4g})")
                failing |= set(m.worse_cases)
    verdict.passed = not verdict.problems
    verdict.failing_cases = sorted(failing)
    return verdict


class Gates:
    def __init__(self, gates: list[GateConfig], db: DbEngine, audit: AuditLog) -> None:
        self.gates, self.db, self.audit = gates, db, audit
        self.store = EvalStore(db)

    def for_route(self, route: RouteConfig) -> list[GateConfig]:
        primaries = [d for d in route.deployments if d.role != "canary"]
        return [g for g in self.gates if g.route == route.name or (
            g.model is not None and any(follows(d, *g.model.split("@", 1)) for d in primaries))]

    def for_alias(self, model: str, alias: str) -> list[GateConfig]:
        return [g for g in self.gates if g.model == f"{model}@{alias}"]

    def verdict(self, gate: GateConfig, candidates: list[str], baselines: list[str]) -> Verdict:
        cand = self.store.latest(gate.suite, candidates)
        cand_results = self.store.results(cand["id"]) if cand else []
        base = self.store.latest(gate.suite, baselines) if gate.not_worse else None
        base_results = self.store.results(base["id"]) if base else []
        return judge(gate, cand, cand_results, base, base_results, candidates[0] if candidates else "the canary")

    async def check(self, gates: list[GateConfig], stage: str, subject: str, candidates: list[str],
                    baselines: list[str], actor: str) -> None:
        """Run each gate that guards ``stage``; audit the outcome; raise ``GateRefused`` on the first refusal."""
        for gate in gates:
            if stage not in gate.stages:
                continue
            v = await asyncio.to_thread(self.verdict, gate, candidates, baselines)
            detail = {"suite": gate.suite, "stage": stage, "candidates": candidates, **v.view()}
            await self.audit.record(actor, "eval_gate.passed" if v.passed else "eval_gate.refused", subject, detail)
            if not v.passed:
                named = ", ".join(v.failing_cases[:MAX_NAMED]) + (" …" if len(v.failing_cases) > MAX_NAMED else "")
                cases = f"; failing cases: {named}" if v.failing_cases else ""
                log.warning("eval gate %s refused %s of %s: %s", gate.suite, stage, subject, "; ".join(v.problems))
                raise GateRefused(f"eval gate {gate.suite!r} refused the {stage} on {subject}: "
                                  f"{'; '.join(v.problems)}{cases}", param="gate")

    async def on_rollout(self, route: RouteConfig, canary: DeploymentConfig, stage: str, actor: str,
                         routes_only: bool = False) -> None:
        """The ``Rollouts.gate`` hook: the canary against the route's primaries (``routes_only``: the gates on
        the route itself, when the alias's own were just checked)."""
        gates = [g for g in self.for_route(route) if g.route is not None or not routes_only]
        if not gates:
            return
        primaries = [d for d in route.deployments if d.role == "primary"]
        candidates = await asyncio.to_thread(targets_of, self.db, [canary])
        baselines = [*await asyncio.to_thread(targets_of, self.db, primaries), f"route:{route.name}"]
        await self.check(gates, stage, route.name, candidates, baselines, actor)
