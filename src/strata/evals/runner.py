"""Running a suite: every case through the gateway (HTTP) against a target, scored, and stored as it finishes.

A target is a route (``route:NAME`` or just ``NAME``), a deployment (``deployment:NAME``) or a registry
version (``registry:NAME@ALIAS`` / ``@N``). A deployment or a version is evaluated on a staging route of its
own (``eval.NAME`` / ``eval.MODEL.vN``, made through the admin API once and kept), so the cases never mix
with the traffic of the route that serves it. A re-run of the same run id skips the cases already stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from strata.errors import InvalidRequest, NotFound, StrataError
from strata.evals.cases import DATASET, Case, cases_hash, load_dataset, load_jsonl
from strata.evals.client import Gateway
from strata.evals.config import ScorerConfig, SuiteConfig
from strata.evals.judge import judge, pairwise
from strata.evals.scorers import PURE, Score, similarity
from strata.evals.store import CaseResult, EvalStore

log = logging.getLogger(__name__)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


@dataclass(frozen=True, slots=True)
class Suite:
    config: SuiteConfig
    cases: list[Case]

    def spec(self) -> dict[str, Any]:
        rubrics = {s.metric: f"{s.rubric.name}@v{s.rubric.version}" for s in self.config.scorers
                   if s.type in ("judge", "pairwise")}
        return {"cases_hash": cases_hash(self.cases), "cases_source": self.config.cases, "rubrics": rubrics,
                "scorers": [s.model_dump() for s in self.config.scorers], "max_tokens": self.config.max_tokens}


@dataclass(frozen=True, slots=True)
class Target:
    name: str  # normalised: route:R, deployment:D or registry:M@N
    route: str  # where the cases are sent
    model_version: str | None


def load_suite(name_or_path: str, settings: Any, db: Any = None) -> Suite:
    """A suite YAML file, or a suite of ``evals.suites`` by name; its cases loaded and checked."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidRequest(f"cannot read suite {path}: {exc}", param="suite") from None
        from strata.gateway.schemas import validate

        cfg: SuiteConfig = validate(SuiteConfig, {**raw, "base_dir": path.parent})
    else:
        found = next((s for s in settings.evals.suites if s.name == name_or_path), None)
        if found is None:
            known = ", ".join(s.name for s in settings.evals.suites) or "none configured"
            raise NotFound(f"no suite {name_or_path!r} (a suite YAML file, or one of evals.suites: {known})",
                           param="suite", code="suite_not_found")
        cfg = found
    if cfg.cases.startswith(DATASET):
        if db is None:
            raise InvalidRequest("dataset cases need the database", param="cases")
        cases = load_dataset(cfg.cases, db, settings)
    else:
        base = cfg.base_dir or Path(".")
        cases = load_jsonl(base / cfg.cases)
    return Suite(cfg, cases)


def new_run_id() -> str:
    return f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


async def resolve_target(gateway: Gateway, target: str) -> Target:
    """Where a target's cases go; a deployment or registry version gets its staging route (made once)."""
    if target.startswith("registry:"):
        model, _, pointer = target.removeprefix("registry:").partition("@")
        if not pointer:
            raise InvalidRequest("a registry target is registry:NAME@ALIAS or registry:NAME@N", param="target")
        v = await gateway.admin("GET", f"/admin/registry/models/{model}/versions/{pointer}")
        route = f"eval.{model}.v{v['version']}"
        engine = {"type": v["engine_type"], **v["parameters"], "model": f"registry:{v['ref']}"}
        await _staging(gateway, route, {"name": f"{route}-dep", "engine": engine})
        return Target(f"registry:{v['ref']}", route, v["ref"])
    if target.startswith("deployment:"):
        name = target.removeprefix("deployment:")
        routes = (await gateway.admin("GET", "/admin/routes"))["data"]
        dep = next((d for r in routes for d in r["deployments"] if d["name"] == name), None)
        if dep is None:
            raise NotFound(f"no deployment {name!r}", param="target")
        route = f"eval.{name}"
        copy = {k: v for k, v in dep.items() if k not in ("name", "role", "traffic", "canary", "status", "tier")}
        await _staging(gateway, route, {**copy, "name": f"{route}-dep"})
        return Target(target, route, None)
    route = target.removeprefix("route:")
    await gateway.admin("GET", f"/admin/routes/{route}")
    return Target(f"route:{route}", route, None)


async def _staging(gateway: Gateway, route: str, dep: dict[str, Any], timeout: float = 300.0) -> None:
    try:
        await gateway.admin("GET", f"/admin/routes/{route}")
    except StrataError:
        await gateway.admin("PUT", f"/admin/routes/{route}/deployments/{dep['name']}", dep)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = await gateway.admin("GET", f"/admin/routes/{route}")
        if all(d["status"]["ready"] is True for d in view["deployments"]):
            return
        await asyncio.sleep(0.5)
    raise StrataError(f"staging route {route} not ready after {timeout:g}s")


def request_id(run_id: str, case_id: str) -> str:
    rid = f"{run_id}.{case_id}"
    return rid if REQUEST_ID.match(rid) else f"{run_id}.{hashlib.sha256(case_id.encode()).hexdigest()[:16]}"


async def apply_scorer(cfg: ScorerConfig, case: Case, output: str, gateway: Gateway, rid: str,
                       baseline: str | None) -> Score:
    if cfg.type in PURE:
        return PURE[cfg.type](cfg, case, output)
    if cfg.type == "similarity":
        return await similarity(cfg, case, output, gateway, f"{rid}.sim")
    if cfg.type == "judge":
        return await judge(cfg, case, output, gateway, f"{rid}.judge")
    return await pairwise(cfg, case, output, baseline, gateway, f"{rid}.pair")


async def run_case(suite: SuiteConfig, case: Case, gateway: Gateway, route: str, rid: str,
                   baseline: str | None) -> CaseResult:
    messages = ([{"role": "system", "content": suite.system}] if suite.system else []) + case.messages
    try:
        answer = await gateway.chat(route, messages, "candidate", rid, suite.max_tokens, suite.temperature)
    except StrataError as exc:
        zeros: dict[str, float | None] = {s.metric: 0.0 for s in suite.scorers}
        return CaseResult(case.id, None, exc.message[:2000], zeros, {}, False, 0.0, None, rid)
    scores: dict[str, float | None] = {}
    details: dict[str, str] = {}
    for s in suite.scorers:
        try:
            score = await apply_scorer(s, case, answer.text, gateway, rid, baseline)
        except StrataError as exc:
            score = Score(None, f"scorer failed: {exc.message}"[:500])
        scores[s.metric], details[s.metric] = score.value, score.detail[:1000]
    passed = all(v >= s.pass_at for s in suite.scorers if (v := scores[s.metric]) is not None)
    return CaseResult(case.id, answer.text, None, scores, details, passed, round(answer.latency_s, 6),
                      answer.tokens, rid)


def summarize(results: list[dict[str, Any]], suite: SuiteConfig) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    for s in suite.scorers:
        values = [r["scores"][s.metric] for r in results if r["scores"].get(s.metric) is not None]
        metrics[s.metric] = {"mean": round(sum(values) / len(values), 6) if values else None, "n": len(values),
                             "pass_rate": round(sum(v >= s.pass_at for v in values) / len(values), 6)
                             if values else None}
    latencies = sorted(r["latency_s"] for r in results if r["error"] is None)
    costs = [r["cost_usd"] for r in results if r["cost_usd"] is not None]
    return {"cases": len(results), "errors": sum(r["error"] is not None for r in results),
            "pass_rate": round(sum(r["passed"] for r in results) / max(1, len(results)), 6), "metrics": metrics,
            "latency_s": {"mean": round(sum(latencies) / len(latencies), 6) if latencies else None,
                          "p50": latencies[len(latencies) // 2] if latencies else None},
            "cost_usd": round(sum(costs), 8) if costs else None}


async def run_suite(suite: Suite, gateway: Gateway, store: EvalStore, target: str, actor: str,
                    baseline: str | None = None, progress: Callable[[int, int], None] | None = None,
                    ledger_wait: float = 1.0) -> dict[str, Any]:
    """Run (or resume) ``gateway.run_id``; returns the finished run with its summary."""
    run_id = gateway.run_id
    resolved = await resolve_target(gateway, target)
    baseline_outputs: dict[str, str | None] = {}
    if baseline is not None:
        baseline_outputs = {r["case_id"]: r["output"] for r in await asyncio.to_thread(store.results, baseline)}
    _, done = await asyncio.to_thread(store.start, run_id, suite.config.name, suite.spec(), resolved.name,
                                      resolved.route, resolved.model_version, baseline, len(suite.cases), actor)
    todo = [c for c in suite.cases if c.id not in done]
    total, finished = len(suite.cases), len(done)
    if progress:
        progress(finished, total)
    gate = asyncio.Semaphore(suite.config.concurrency)

    async def one(case: Case) -> None:
        nonlocal finished
        async with gate:
            result = await run_case(suite.config, case, gateway, resolved.route, request_id(run_id, case.id),
                                    baseline_outputs.get(case.id))
        await asyncio.to_thread(store.record, run_id, result)
        finished += 1
        if progress:
            progress(finished, total)

    await asyncio.gather(*(one(c) for c in todo))
    await asyncio.sleep(ledger_wait)  # the gateway writes its ledger in batches (ledger.flush_interval)
    await asyncio.to_thread(store.fill_costs, run_id)
    results = await asyncio.to_thread(store.results, run_id)
    return await asyncio.to_thread(store.finish, run_id, summarize(results, suite.config))
