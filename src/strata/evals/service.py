"""What the CLI and the admin API share over recorded runs: show one with its results, compare two."""

from __future__ import annotations

import csv
import io
from typing import Any

from strata.evals.stats import compare_runs
from strata.evals.store import EvalStore


def show(store: EvalStore, run_id: str) -> dict[str, Any]:
    return {**store.get(run_id), "results": store.results(run_id)}


def compare(store: EvalStore, candidate: str, baseline: str, confidence: float = 0.95) -> dict[str, Any]:
    cand, base = store.get(candidate), store.get(baseline)
    metrics = compare_runs(store.results(candidate), store.results(baseline), confidence)
    return {"candidate": cand["id"], "baseline": base["id"], "suite": cand["suite"], "confidence": confidence,
            "same_cases": cand["cases_hash"] == base["cases_hash"], "metrics": [m.view() for m in metrics],
            "worse": [m.metric for m in metrics if m.worse], "better": [m.metric for m in metrics if m.better]}


def to_csv(results: list[dict[str, Any]]) -> str:
    """One row per case: id, passed, each metric's score, latency, cost, tokens, error, output."""
    metrics = sorted({m for r in results for m in r["scores"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["case_id", "passed", *metrics, "latency_s", "cost_usd", "tokens", "error", "output"])
    for r in results:
        writer.writerow([r["case_id"], r["passed"], *(r["scores"].get(m) for m in metrics), r["latency_s"],
                         r["cost_usd"], r["tokens"], r["error"], r["output"]])
    return out.getvalue()
