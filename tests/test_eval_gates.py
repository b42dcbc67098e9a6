"""Eval gates on rollouts: a registry alias (or a route) requires a suite to pass before a canary starts,
steps or is promoted. A worse version (a deployment that answers wrong, deterministically: the fake
upstream's ``ok`` model answers a fixed sentence) is refused with its failing cases named and the refusal in
the audit trail; an equal one (``echo``, which repeats the question and so contains its facts) is admitted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strata.evals.config import GateConfig
from strata.evals.gates import judge
from tests.servers import StrataProcess, cli, openai_route
from tests.upstreams import FaultyUpstream

WORDS = [f"word{i}" for i in range(10)]
GATES = [{"model": "bot@champion", "suite": "qa", "thresholds": {"contains": 0.9}},
         {"route": "chat2", "suite": "qa", "stages": ["promote"], "thresholds": {"pass_rate": 0.9}}]


@pytest.fixture(scope="module")
def up() -> Iterator[FaultyUpstream]:
    with FaultyUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def strata(up: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    config = {"routes": [openai_route("plain", up.base_url, "ok"), openai_route("chat2", up.base_url, "echo")],
              "evals": {"gates": GATES}}
    proc = StrataProcess(tmp_path_factory.mktemp("gates"), config)
    proc.start(ready_timeout=60)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("suite")
    (tmp / "qa.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "input": f"Say {w}.", "facts": [w]}) + "\n"
                                          for i, w in enumerate(WORDS)))
    path = tmp / "qa.yaml"
    path.write_text(json.dumps({"name": "qa", "cases": "qa.jsonl", "scorers": [{"type": "contains"}],
                                "concurrency": 8}))
    return path


def evaluate(proc: StrataProcess, suite: Path, target: str) -> dict[str, Any]:
    p = cli(proc, "evals", "run", str(suite), "--target", target, "--data-dir", str(proc.data_dir), "--json")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return dict(json.loads(out))


def register(proc: StrataProcess, up: FaultyUpstream, answer: str) -> int:
    body = {"model": "bot", "artifact": answer, "engine_type": "openai", "parameters": {"base_url": up.base_url}}
    r = proc.admin("POST", "/admin/registry/models", json=body)
    assert r.status_code == 200, r.text
    return int(r.json()["version"])


def move(proc: StrataProcess, version: int) -> Any:
    return proc.admin("PUT", "/admin/registry/models/bot/aliases/champion", json={"version": version})


def audit(proc: StrataProcess, action: str) -> list[dict[str, Any]]:
    return list(proc.admin("GET", "/admin/audit", params={"action": action}).json()["data"])


def test_an_alias_move_is_refused_for_a_worse_version_and_admitted_for_an_equal_one(
        strata: StrataProcess, up: FaultyUpstream, suite: Path) -> None:
    assert register(strata, up, "echo") == 1
    assert move(strata, 1).status_code == 200
    dep = {"engine": {"type": "openai", "base_url": up.base_url, "model": "registry:bot@champion"}}
    assert strata.admin("PUT", "/admin/routes/bot/deployments/bot-main", json=dep).status_code == 200
    assert strata.admin("PATCH", "/admin/routes/bot", json={"canary": {"steps": [50, 100]}}).status_code == 200
    base = evaluate(strata, suite, "registry:bot@1")
    assert (base["target"], base["route"], base["summary"]["pass_rate"]) == ("registry:bot@1", "eval.bot.v1", 1.0)

    worse = register(strata, up, "ok")
    r = move(strata, worse)
    assert r.status_code == 409 and r.json()["error"]["code"] == "gate_refused"
    assert "no finished run of suite 'qa' against registry:bot@2" in r.json()["error"]["message"]
    assert evaluate(strata, suite, "registry:bot@2")["summary"]["pass_rate"] == 0.0
    r = move(strata, worse)
    assert r.status_code == 409, r.text
    message = r.json()["error"]["message"]
    assert "contains mean 0.000 < 0.9" in message and "significantly worse than the baseline run" in message
    assert "failing cases: q0, q1, q2" in message
    (refused, *_) = audit(strata, "eval_gate.refused")
    assert refused["subject"] == "bot@champion" and refused["detail"]["failing_cases"] == sorted(
        f"q{i}" for i in range(10)) and refused["detail"]["stage"] == "start"
    alias = strata.admin("GET", "/admin/registry/models/bot").json()["aliases"][0]
    assert (alias["version"], alias["pending"]) == (1, None), "a refused move changes nothing"
    assert len(strata.admin("GET", "/admin/routes/bot").json()["deployments"]) == 1, "no canary started"

    equal = register(strata, up, "echo")
    evaluate(strata, suite, f"registry:bot@{equal}")
    r = move(strata, equal)
    assert r.status_code == 200, r.text
    assert r.json()["rollouts"] == ["bot"]
    assert audit(strata, "eval_gate.passed")[0]["detail"]["stage"] == "start"
    r = strata.admin("POST", "/admin/routes/bot/promote")
    assert r.status_code == 200, r.text
    assert audit(strata, "eval_gate.passed")[0]["detail"]["stage"] == "promote"
    assert strata.admin("GET", "/admin/registry/models/bot/versions/champion").json()["version"] == equal


def test_a_route_gate_refuses_promoting_a_canary_that_answers_wrong(strata: StrataProcess, suite: Path) -> None:
    r = strata.admin("POST", "/admin/routes/chat2/canary", json={"model": "ok", "traffic": 10})
    assert r.status_code == 200, "the gate guards promotion only: the canary may start"
    canary = next(d["name"] for d in r.json()["route"]["deployments"] if d["role"] == "canary")
    r = strata.admin("POST", "/admin/routes/chat2/promote")
    assert r.status_code == 409 and f"against deployment:{canary}" in r.json()["error"]["message"]
    run = evaluate(strata, suite, f"deployment:{canary}")
    assert run["route"] == f"eval.{canary}" and run["summary"]["pass_rate"] == 0.0
    r = strata.admin("POST", "/admin/routes/chat2/promote")
    assert r.status_code == 409 and "pass_rate 0.000 < 0.9" in r.json()["error"]["message"]
    assert "failing cases: q0" in r.json()["error"]["message"]
    route = strata.admin("GET", "/admin/routes/chat2").json()
    assert [d["role"] for d in route["deployments"]] == ["primary", "canary"], "the canary is not promoted"
    assert audit(strata, "eval_gate.refused")[0]["detail"]["stage"] == "promote"


def _results(scores: list[float]) -> list[dict[str, Any]]:
    return [{"case_id": f"c{i}", "scores": {"judge": s}, "passed": s >= 0.5, "latency_s": 1.0}
            for i, s in enumerate(scores)]


def test_the_gate_verdict_on_recorded_results() -> None:
    gate = GateConfig(route="r", suite="s", thresholds={"judge": 0.6, "pass_rate": 0.8})
    run = {"id": "cand"}
    good = judge(gate, run, _results([0.8] * 12), {"id": "base"}, _results([0.8] * 12), "x")
    assert good.passed and good.problems == []
    drop = judge(gate, run, _results([0.7] * 12), {"id": "base"}, _results([0.9] * 12), "x")
    (problem,) = drop.problems
    assert not drop.passed and problem.startswith("judge significantly worse than the baseline run base (0.7 vs "
                                                  "0.9, wilcoxon p=0.000244")
    low = judge(gate, run, _results([0.9] * 6 + [0.2] * 6), None, [], "x")
    assert not low.passed and low.failing_cases == sorted(f"c{i}" for i in range(6, 12))
    assert "judge mean 0.550 < 0.6" in low.problems and "pass_rate 0.500 < 0.8" in low.problems
    assert not judge(gate, None, [], None, [], "registry:m@2").passed


def test_eval_store_resumes_and_the_gate_reads_it_on_sqlite_and_postgres(db_url: str) -> None:
    from strata.evals.store import CaseResult, EvalStore
    from strata.store.db import open_database

    db = open_database(db_url)
    store = EvalStore(db)
    spec = {"cases_hash": "sha256:x"}
    for run_id, target, score in (("base", "route:r", 1.0), ("cand", "registry:m@2", 0.0)):
        store.start(run_id, "s", spec, target, "r", None, None, 10, "me")
        for i in range(10):
            store.record(run_id, CaseResult(f"c{i}", "answer", None, {"contains": score}, {}, score == 1.0, 0.1,
                                            3, None))
        store.record(run_id, CaseResult("c0", "again", None, {"contains": 0.5}, {}, True, 0.1, 3, None))
        store.finish(run_id, {"cases": 10})
    _, done = store.start("cand", "s", spec, "registry:m@2", "r", None, None, 10, "me")
    assert done == {f"c{i}" for i in range(10)}, "a resumed run knows its finished cases"
    assert store.results("cand")[0]["output"] == "answer", "the first result of a case stands"
    store.finish("cand", {"cases": 10})
    gate = GateConfig(model="m@champion", suite="s", thresholds={"contains": 0.5})
    from strata.evals.gates import Gates

    verdict = Gates([gate], db, None).verdict(gate, ["registry:m@2"], ["route:r"])  # type: ignore[arg-type]
    assert not verdict.passed and verdict.baseline_run == "base" and len(verdict.failing_cases) == 10
    db.dispose()


async def test_a_canary_step_its_gate_refuses_is_rolled_back(tmp_path: Path) -> None:
    """The canary control loop (fake clock): the step is due, the route's gate has no passing run for the canary,
    so instead of stepping up the canary is rolled back, and the refusal is audited."""
    from strata.config.settings import load_settings
    from strata.evals.gates import Gates
    from strata.observe.audit import audit_log
    from strata.routing.config import RouteConfig
    from strata.routing.rollout import Rollouts
    from strata.store.db import open_database

    engine = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    route = RouteConfig.model_validate({"name": "r", "canary": {"steps": [10, 50], "step_min_seconds": 0,
                                                                "step_min_requests": 0, "min_requests": 5},
                                        "deployments": [{"name": "main", "engine": engine},
                                                        {"name": "next", "engine": engine, "role": "canary",
                                                         "traffic": 10}]})
    settings = load_settings(None, data_dir=tmp_path, routes=[route.model_dump()],
                             evals={"gates": [{"route": "r", "suite": "qa", "thresholds": {"contains": 0.9}}]})
    db = open_database(settings.database_url)
    audit = audit_log(settings, db)
    routes = {"r": route}
    changes: list[tuple[str, str]] = []

    async def apply(old: RouteConfig, new: RouteConfig, action: str, actor: str, reason: str) -> None:
        routes[new.name] = new
        changes.append((action, reason))

    now = [1000.0]
    rollouts = Rollouts(lambda: routes, apply, lambda *a: None, clock=lambda: now[0])
    rollouts.gate = Gates(settings.evals.gates, db, audit).on_rollout
    for _ in range(40):
        rollouts.record("r", "canary", True, 0.1)
        rollouts.record("r", "primary", True, 0.1)
    now[0] += 10
    await rollouts.reconcile()  # the analysis says "advance"; the gate turns it into a rollback
    (action, reason), = changes
    assert action == "canary_rollback" and "eval gate 'qa' refused the step on r" in reason
    assert [d.name for d in routes["r"].deployments] == ["main"]
    (entry,) = audit.entries(action="eval_gate.refused")
    assert entry["subject"] == "r" and entry["detail"]["stage"] == "step"
    db.dispose()
