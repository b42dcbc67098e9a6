"""Eval suites end to end: the bundled SmolLM2 answers through the gateway, a real LLM judge route (a fake
upstream answering a fixed verdict) scores it, MiniLM embeds for similarity (the plumbing, not the model's
wisdom); resuming, pairwise preference and comparisons run on the fake upstream's ``echo`` route (fast and
deterministic); and the statistics on constructed paired data (unit)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, delete

from strata.evals.judge import parse_score, parse_winner
from strata.evals.stats import compare_metric, paired_test
from strata.evals.tables import EvalResult
from tests.servers import StrataProcess, cli, finished, ledger_rows, openai_route, wait_for
from tests.upstreams import FaultyUpstream

CASES: list[dict[str, Any]] = [
    {"id": "capital", "input": "What is the capital of France? Answer in one word.", "reference": "Paris",
     "facts": ["Paris"]},
    {"id": "sum", "input": "What is 2 + 2? Answer with a number.", "number": 4},
    {"id": "json", "input": 'Reply with the JSON object {"ok": true} and nothing else.',
     "schema": {"type": "object", "required": ["ok"]}},
    {"id": "greet", "messages": [{"role": "system", "content": "You are terse."},
                                 {"role": "user", "content": "Say hello."}], "reference": "Hello!",
     "pattern": "hel+o"},
]
SCORERS: list[dict[str, Any]] = [{"type": "contains"}, {"type": "numeric"}, {"type": "json_schema"}, {"type": "regex"},
           {"type": "similarity", "route": "minilm"},
           {"type": "judge", "route": "judge", "rubric": {"name": "helpful", "version": 3}}]


# -- unit: the statistics on constructed paired data ---------------------------------------------------

def test_mcnemar_exact_on_constructed_pass_fail_pairs() -> None:
    pairs = [(f"c{i}", 0.0, 1.0) for i in range(8)] + [(f"s{i}", 1.0, 1.0) for i in range(12)]
    m = compare_metric("passed", pairs, 0.95)
    assert m.test == "mcnemar-exact" and m.worse and not m.better
    assert m.p_worse == pytest.approx(0.5 ** 8, abs=1e-6), "8 discordant pairs all against the candidate"
    assert m.worse_cases == [f"c{i}" for i in range(8)]
    balanced = [(f"a{i}", 0.0, 1.0) for i in range(4)] + [(f"b{i}", 1.0, 0.0) for i in range(4)]
    m = compare_metric("passed", balanced, 0.95)
    assert not m.worse and not m.better and m.p_value == pytest.approx(1.0)


def test_wilcoxon_on_constructed_graded_pairs() -> None:
    base = [0.5 + 0.02 * i for i in range(15)]
    worse = [b - 0.2 + 0.01 * (i % 3) for i, b in enumerate(base)]
    m = compare_metric("judge", [(str(i), c, b) for i, (c, b) in enumerate(zip(worse, base, strict=True))], 0.95)
    assert m.test == "wilcoxon" and m.worse and m.p_worse < 0.001 and len(m.worse_cases) == 15
    jitter = [b + (0.01 if i % 2 else -0.01) for i, b in enumerate(base)]
    m = compare_metric("judge", [(str(i), c, b) for i, (c, b) in enumerate(zip(jitter, base, strict=True))], 0.95)
    assert not m.worse and not m.better
    assert paired_test([0.3, 0.4], [0.3, 0.4])[1:] == (1.0, 1.0, 1.0), "identical runs: no difference"
    lat = compare_metric("latency_s", [(str(i), 2.0 + i, 1.0 + i) for i in range(10)], 0.95, lower_is_better=True)
    assert lat.worse, "slower is worse for latency"


def test_judge_answers_are_parsed_robustly() -> None:
    assert parse_score('{"score": 4, "rationale": "good"}', 5) == (0.75, "good")
    assert parse_score("Score: 3 out of 5", 5)[0] == 0.5
    assert parse_score('{"score": 9}', 5)[0] is None and parse_score("no idea", 5)[0] is None
    assert parse_winner('{"winner": "b"}') == "B" and parse_winner("A is better") is None


# -- end to end through the gateway ------------------------------------------------------------------

@pytest.fixture(scope="module")
def judge_up() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def strata(judge_up: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    from tests.conftest import HAVE_LOCAL_MODELS

    if not HAVE_LOCAL_MODELS:
        pytest.skip("bundled models not installed (make test installs them)")
    tmp = tmp_path_factory.mktemp("evals")
    echo_cases = [{"id": "say", "input": "Say Paris.", "facts": ["Paris"]}]  # echo repeats the question
    echo_suite = {"name": "echo-facts", "cases": str(write_cases(tmp / "echo.jsonl", echo_cases)),
                  "scorers": [{"type": "contains"}]}
    config = {"routes": [
        {"name": "smollm2", "deployments": [{"name": "smollm2-local", "engine": {"type": "llamacpp", "n_parallel": 4,
                                                                                 "n_ctx": 4096},
                                             "price": {"busy_hour": 0.10}}]},
        {"name": "minilm", "deployments": [{"name": "minilm-local", "engine": {"type": "sentence-transformers"}}]},
        openai_route("judge", judge_up.base_url, "judge"), openai_route("echo", judge_up.base_url, "echo")],
        "evals": {"suites": [echo_suite]}}
    proc = StrataProcess(tmp, config)
    proc.start(ready_timeout=300)
    yield proc
    proc.stop()


def write_cases(path: Path, cases: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in cases))
    return path


def suite_file(tmp: Path, name: str, scorers: list[dict[str, Any]], cases: list[dict[str, Any]] = CASES) -> Path:
    write_cases(tmp / "cases.jsonl", cases)
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps({"name": name, "cases": "cases.jsonl", "scorers": scorers, "max_tokens": 8,
                                "concurrency": 4}))
    return path


def evals(proc: StrataProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """``strata evals …`` reading the server's database (list/show/compare take no --url/--key)."""
    return subprocess.run([sys.executable, "-m", "strata", "evals", *args, "--data-dir", str(proc.data_dir)],
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin",
                                                                            "HOME": str(proc.data_dir)})


def run(proc: StrataProcess, suite: Path, *more: str, target: str = "echo") -> dict[str, Any]:
    p = cli(proc, "evals", "run", str(suite), "--target", target, "--data-dir", str(proc.data_dir), "--json", *more)
    out, err = p.communicate(timeout=600)  # SmolLM2 on a busy CPU: minutes, not seconds
    assert p.returncode == 0, err
    return dict(json.loads(out))


def test_a_suite_runs_through_the_gateway_with_an_llm_judge(strata: StrataProcess, tmp_path: Path) -> None:
    suite = suite_file(tmp_path, "smoke", SCORERS, [CASES[0], CASES[1]])
    done = run(strata, suite, "--run-id", "smoke-1", target="smollm2")
    assert (done["id"], done["status"], done["target"], done["cases"]) == ("smoke-1", "finished", "route:smollm2", 2)
    assert done["rubrics"] == {"judge": "helpful@v3"}, "the rubric's version is recorded with the run"
    view = json.loads(evals(strata, "show", "smoke-1", "--json", "--csv", str(tmp_path / "out.csv")).stdout)
    results = {r["case_id"]: r for r in view["results"]}
    assert set(results) == {"capital", "sum"}
    for r in results.values():
        assert r["error"] is None and r["output"], "every case was answered by SmolLM2"
        assert r["scores"]["judge"] == 0.75 and r["details"]["judge"] == "fixed judge", "4 of 5 from the judge"
        assert r["latency_s"] > 0 and r["cost_usd"] is not None and r["cost_usd"] > 0, "priced from the ledger"
    assert 0.0 <= results["capital"]["scores"]["similarity"] <= 1.0, "MiniLM cosine to the reference"
    assert results["capital"]["details"]["similarity"].startswith("cosine")
    assert results["capital"]["scores"]["numeric"] is None, "a scorer without its reference does not count"
    assert results["sum"]["scores"]["similarity"] is None
    assert results["sum"]["scores"]["numeric"] in (0.0, 1.0)
    assert view["summary"]["metrics"]["judge"] == {"mean": 0.75, "n": 2, "pass_rate": 1.0}
    rows = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert sorted(r["case_id"] for r in rows) == ["capital", "sum"] and "judge" in rows[0]
    ledger = strata.ledger()
    judge_rows = [r for r in ledger if r["tags"].get("eval_run") == "smoke-1" and r["tags"]["eval_role"] == "judge"]
    assert len(judge_rows) == 2 and {r["route"] for r in judge_rows} == {"judge"}, "judge calls are accounted"
    cand = [r for r in ledger if r["tags"].get("eval_run") == "smoke-1" and r["tags"]["eval_role"] == "candidate"]
    assert {r["route"] for r in cand} == {"smollm2"} and len(cand) == 2
    listed = json.loads(evals(strata, "list", "--suite", "smoke", "--json").stdout)
    assert [r["id"] for r in listed] == ["smoke-1"]


def test_an_interrupted_run_resumes_without_running_done_cases_again(strata: StrataProcess,
                                                                     tmp_path: Path) -> None:
    suite = suite_file(tmp_path, "resume", [{"type": "contains"}])
    run(strata, suite, "--run-id", "resume-1")
    db = create_engine(f"sqlite:///{strata.data_dir / 'strata.db'}")
    with db.begin() as conn:  # as if the run had been killed before these two cases finished
        conn.execute(delete(EvalResult).where(EvalResult.run_id == "resume-1",
                                              EvalResult.case_id.in_(["sum", "json"])))
    db.dispose()
    done = run(strata, suite, "--run-id", "resume-1")
    assert done["summary"]["cases"] == 4
    calls = [r for r in ledger_rows(strata.data_dir) if r["tags"].get("eval_run") == "resume-1"]
    by_case: dict[str, int] = {}
    for r in calls:
        case = r["request_id"].split(".", 1)[1]
        by_case[case] = by_case.get(case, 0) + 1
    assert by_case == {"capital": 1, "sum": 2, "json": 2, "greet": 1}, "only the missing cases ran again"
    p = finished(cli(strata, "evals", "run", str(suite_file(tmp_path, "other", [{"type": "exact"}])),
                     "--target", "echo", "--data-dir", str(strata.data_dir), "--run-id", "resume-1"))
    assert p.returncode == 1 and "another suite" in p.stderr


def test_pairwise_against_a_baseline_and_a_paired_comparison(strata: StrataProcess, tmp_path: Path) -> None:
    suite = suite_file(tmp_path, "pair", [{"type": "contains"}, {"type": "pairwise", "route": "judge"}])
    run(strata, suite, "--run-id", "pair-base")
    done = run(strata, suite, "--run-id", "pair-new", "--baseline", "pair-base")
    assert done["baseline"] == "pair-base"
    view = json.loads(evals(strata, "show", "pair-new", "--json").stdout)
    for r in view["results"]:
        assert r["scores"]["pairwise"] == 0.5, "a judge always preferring answer A: both orders cancel out"
    cmp = evals(strata, "compare", "pair-new", "pair-base", "--json")
    assert cmp.returncode == 0, cmp.stderr
    report = json.loads(cmp.stdout)
    metrics = {m["metric"]: m for m in report["metrics"]}
    assert {"contains", "pairwise", "passed", "latency_s"} <= set(metrics) and report["same_cases"]
    assert metrics["passed"]["test"] == "mcnemar-exact" and metrics["passed"]["n"] == 4
    assert metrics["pairwise"]["n"] == 0, "the baseline run had no baseline of its own to be preferred over"


def test_admin_api_starts_a_run_in_the_gateway(strata: StrataProcess) -> None:
    r = strata.admin("POST", "/admin/evals/runs", json={"suite": "echo-facts", "target": "echo", "run_id": "api-1"})
    assert r.status_code == 200, r.text
    run_view = wait_for(lambda: (v := strata.admin("GET", "/admin/evals/runs/api-1").json()).get("status")
                        == "finished" and v, 60, "the run to finish")
    assert run_view["summary"]["pass_rate"] == 1.0 and run_view["results"][0]["scores"] == {"contains": 1.0}
    assert strata.admin("GET", "/admin/evals/runs/nope").status_code == 404
    r = strata.admin("GET", "/admin/evals/compare", params={"candidate": "api-1", "baseline": "api-1"})
    assert r.status_code == 200 and r.json()["worse"] == []
