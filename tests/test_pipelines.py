"""Pipelines: steps versioned by code and params, a step-output cache (a re-run over unchanged input runs no
step), record lineage both ways, quality checks that reject a version and name its failing records; the
CLI, and the admin API of a real gateway (team isolation, the embed step through the MiniLM route)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from strata.data.blobs import BlobStore
from strata.data.config import DataSettings
from strata.data.lineage import Lineage, record_node
from strata.data.pipeline import PipelineRunner, load_spec
from strata.data.records import Record, make_records
from strata.data.service import DataService
from strata.data.steps import Out, StepContext
from strata.data.store import DatasetStore
from strata.errors import NotFound
from strata.store.db import open_database
from tests.conftest import needs_models
from tests.servers import StrataProcess, wait_for

CALLS: list[int] = []  # one entry per call of ``shout``: the cache test counts them


def strata(*args: str) -> subprocess.CompletedProcess[str]:
    """``strata ...`` in a subprocess (as tests.test_cli's, with more time: the machine is shared)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    return subprocess.run([sys.executable, "-m", "strata", *args], capture_output=True, text=True, env=clean,
                          timeout=300)


def shout(records: Sequence[Record], params: Any, ctx: StepContext) -> list[Out]:
    """A custom step (``tests.test_pipelines:shout``): upper-cases ``text``."""
    CALLS.append(len(records))
    return [Out({**r.data, "text": str(r.data.get("text", "")).upper()}, [r.id]) for r in records]


TICKETS = [{"id": "t1", "text": "I want a  refund for my order"},
           {"id": "t2", "text": "i want a refund for my order"},  # a duplicate of t1 once normalised
           {"id": "t3", "text": "Where is my parcel?"},
           {"id": "t4", "text": "   "},  # empty after cleaning
           {"id": "t5", "text": "The parcel never arrived"}]
SPEC = {"name": "triage", "steps": [{"clean": {}}, {"deduplicate": {}}, {"step": "tests.test_pipelines:shout"},
                                    {"label": {"rules": [{"contains": "refund", "label": "billing"}],
                                               "default": "shipping"}},
                                    {"split": {"test": 0.5, "seed": "s1"}}],
        "checks": [{"expect_column_values_to_not_be_null": {"column": "label"}}]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[DatasetStore]:
    db = open_database(f"sqlite:///{tmp_path / 'strata.db'}")
    yield DatasetStore(db, BlobStore((tmp_path / "datasets").as_uri()))
    db.dispose()


def test_rerun_on_unchanged_input_computes_nothing(store: DatasetStore) -> None:
    store.add_version("t", "tickets", make_records(TICKETS), source={"kind": "records"})
    runner = PipelineRunner(store)
    CALLS.clear()
    first = runner.run("t", load_spec(SPEC), "tickets")
    assert first.status == "published" and first.output.ref == "tickets-triage@1" and first.created
    assert [s.cached for s in first.steps] == [False] * 5 and CALLS == [3]
    assert [(s.input_count, s.output_count) for s in first.steps] == [(5, 4), (4, 3), (3, 3), (3, 3), (3, 3)]
    second = PipelineRunner(store).run("t", load_spec(SPEC), "tickets@1")
    assert [s.cached for s in second.steps] == [True] * 5 and CALLS == [3]  # no step function ran
    assert second.output.id == first.output.id and not second.created
    # another label rule: the steps before label come from the cache, label and split run again
    spec = json.loads(json.dumps(SPEC))
    spec["steps"][3]["label"]["default"] = "other"
    third = PipelineRunner(store).run("t", load_spec(spec), "tickets")
    assert [s.cached for s in third.steps] == [True, True, True, False, False] and CALLS == [3]
    assert third.output.ref == "tickets-triage@2"
    # changed input: everything from the first step on is recomputed
    store.add_version("t", "tickets", make_records([*TICKETS, {"id": "t6", "text": "Refund please"}]),
                      source={"kind": "records"})
    fourth = PipelineRunner(store).run("t", load_spec(SPEC), "tickets")
    assert not any(s.cached for s in fourth.steps) and CALLS == [3, 4]
    assert fourth.steps[2].version == third.steps[2].version  # the same code: the same step version


def test_lineage_both_ways(store: DatasetStore) -> None:
    src, _ = store.add_version("t", "tickets", make_records(TICKETS), source={"kind": "records"})
    run = PipelineRunner(store).run("t", load_spec(SPEC), "tickets")
    out = run.output
    by_id = {r.id: r.data for r in store.iter_records(out)}
    assert set(by_id) == {"t1", "t3", "t5"} and by_id["t1"]["label"] == "billing"
    lineage = Lineage(store.db)
    up = lineage.walk("record", record_node(out.id, "t1"), "up")
    assert sorted(h.edge.src_id for h in up) == [record_node(src.id, "t1"), record_node(src.id, "t2")]
    down = lineage.walk("record", record_node(src.id, "t2"), "down")
    assert [h.edge.dst_id for h in down] == [record_node(out.id, "t1")]
    assert lineage.walk("record", record_node(src.id, "t4"), "down") == []  # dropped as empty: no descendant
    version_up = {(h.edge.src_kind, h.edge.src_id) for h in lineage.walk("dataset_version", out.id, "up")}
    assert ("pipeline_run", run.id) in version_up and ("dataset_version", src.id) in version_up
    assert {f"{s.step}@{s.version}#{s.params_hash[:12]}" for s in run.steps} <= {i for k, i in version_up
                                                                                if k == "step_run"}


def test_failing_check_rejects_the_version_and_names_records(store: DatasetStore) -> None:
    rows = [{"id": "a", "text": "mail me at jo@example.com", "score": 0.4, "label": "x"},
            {"id": "b", "text": "fine", "score": 7, "label": "x"},
            {"id": "c", "text": "also fine", "score": 0.9, "label": "y"}]
    store.add_version("t", "scored", make_records(rows), source={"kind": "records"})
    spec = load_spec({"name": "gate", "steps": [{"clean": {}}], "checks": [
        {"expect_no_pii": {}}, {"expect_column_values_to_be_between": {"column": "score", "min_value": 0,
                                                                       "max_value": 1}},
        {"expect_record_schema": {"fields": {"text": "string", "score": "number"}}},
        {"expect_label_balance": {"column": "label", "min_share": 0.4}}]})
    result = PipelineRunner(store).run("t", spec, "scored")
    assert result.status == "rejected" and result.output.status == "rejected"
    failed = {c.check: c.failures for c in result.checks if not c.passed}
    assert failed["expect_no_pii"] == [{"id": "a", "reason": "found pii.email"}]
    assert failed["expect_column_values_to_be_between"] == [{"id": "b", "reason": "score=7 outside [0.0, 1.0]"}]
    assert [f["id"] for f in failed["expect_label_balance"]] == ["c"]
    assert "expect_record_schema" not in failed
    with pytest.raises(NotFound):
        store.get_version("t", "scored-gate")  # nothing published: the rejected version is not served
    assert store.get_version("t", "scored-gate", "1", include_rejected=True).checks == [c.view() for c in
                                                                                        result.checks]


def test_cli_run_blocks_then_publishes_then_reuses_the_cache(tmp_path: Path) -> None:
    def run(*args: str, code: int = 0) -> str:
        p = strata("pipelines", *args, "--data-dir", str(tmp_path))
        assert p.returncode == code and "Traceback" not in p.stderr, (p.stdout, p.stderr)
        return p.stdout

    db = open_database(f"sqlite:///{tmp_path / 'strata.db'}")
    svc = DataService(db, DataSettings(), tmp_path)  # the service the CLI runs on, same data dir
    svc.create("default", "queries", [{"id": "q1", "text": "call 415-555-0132 now"}, {"id": "q2", "text": "hi"}],
               source={"kind": "records"})
    spec = tmp_path / "clean.yaml"
    spec.write_text("name: clean\noutput: queries-clean\nsteps:\n  - clean: {}\n  - deduplicate: {near: true}\n"
                    "checks:\n  - expect_no_pii: {kinds: [phone, email]}\n")
    out = run("run", str(spec), "queries", code=1)
    assert "REJECTED queries-clean@1" in out and "q1: found pii.phone" in out
    with pytest.raises(NotFound):
        svc.store.get_version("default", "queries-clean")
    svc.create("default", "queries", [{"id": "q2", "text": "hi"}], source={"kind": "records"})
    out = run("run", str(spec), "queries")
    assert "published queries-clean@2" in out and "(cached)" not in out
    again = run("run", str(spec), "queries")
    assert again.count("(cached)") == 2 and "unchanged" in again
    runs = json.loads(run("list", "--json"))
    assert [r["status"] for r in runs] == ["published", "published", "rejected"]
    db.dispose()


MINILM = {"routes": [{"name": "minilm", "deployments": [{"name": "minilm-local",
                                                         "engine": {"type": "sentence-transformers"}}]}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    from tests.conftest import HAVE_LOCAL_MODELS

    if not HAVE_LOCAL_MODELS:
        pytest.skip("bundled models not installed (make test installs them)")
    proc = StrataProcess(tmp_path_factory.mktemp("pipelines-gw"), MINILM)
    proc.start(ready_timeout=300)
    yield proc
    proc.stop()


def key_for(gw: StrataProcess, team: str, role: str = "operator") -> str:
    r = gw.admin("POST", "/admin/keys", json={"name": f"{team}-data", "team": team, "role": role,
                                              "scopes": {"teams": [team]}})
    assert r.status_code == 200, r.text
    return str(r.json()["key"])


def call(gw: StrataProcess, key: str, method: str, path: str, headers: dict[str, str] | None = None,
         **kw: Any) -> httpx.Response:
    return httpx.request(method, gw.url + path, headers={"Authorization": f"Bearer {key}", **(headers or {})},
                         timeout=120, **kw)


@needs_models
def test_admin_api_is_team_scoped(gateway: StrataProcess) -> None:
    a, b = key_for(gateway, "alpha"), key_for(gateway, "beta")
    r = call(gateway, a, "POST", "/admin/datasets", json={"name": "notes", "records": TICKETS[:3]})
    assert r.status_code == 200 and r.json()["ref"] == "notes@1" and r.json()["team"] == "alpha", r.text
    r = call(gateway, b, "POST", "/admin/datasets", json={"name": "notes", "records": TICKETS[3:]})
    assert r.status_code == 200 and r.json()["team"] == "beta"
    assert [d["team"] for d in call(gateway, b, "GET", "/admin/datasets").json()["data"]] == ["beta"]
    assert call(gateway, b, "GET", "/admin/datasets/notes/versions/1/records").json()["data"][0]["id"] == "t4"
    leak = call(gateway, b, "GET", "/admin/datasets/notes?team=alpha")
    assert leak.status_code == 404 and leak.json()["error"]["code"] == "dataset_not_found"
    write = call(gateway, b, "POST", "/admin/datasets", json={"name": "x", "team": "alpha", "records": []})
    assert write.status_code == 403 and write.json()["error"]["code"] == "scope_denied"
    spec = {"name": "p", "steps": [{"clean": {}}]}
    run = call(gateway, b, "POST", "/admin/pipelines/runs", json={"pipeline": spec, "input": "notes", "team": "alpha"})
    assert run.status_code == 403
    member = key_for(gateway, "beta", role="member")
    assert call(gateway, member, "GET", "/admin/datasets").status_code == 403  # no datasets.read
    every = gateway.admin("GET", "/admin/datasets").json()["data"]
    assert {(d["team"], d["name"]) for d in every} >= {("alpha", "notes"), ("beta", "notes")}


@needs_models
def test_embed_step_through_the_gateway_and_shift_check(gateway: StrataProcess) -> None:
    key = key_for(gateway, "emb")
    rows = [{"id": f"s{i}", "text": t} for i, t in enumerate(
        ["refund for a broken kettle", "refund my order", "money back for the toaster", "return and refund"])]
    assert call(gateway, key, "POST", "/admin/datasets", json={"name": "support", "records": rows}).status_code == 200
    spec = {"name": "vec", "output": "support-vec", "steps": [{"embed": {"batch": 2}}],
            "checks": [{"expect_embedding_shift_below": {"max_mmd": 0.05}}]}
    rid = "req-embed-pipeline-1"
    r = call(gateway, key, "POST", "/admin/pipelines/runs", json={"pipeline": spec, "input": "support"},
             headers={"X-Request-Id": rid})
    assert r.status_code == 200 and r.json()["status"] == "published", r.text
    recs = call(gateway, key, "GET", "/admin/datasets/support-vec/versions/1/records").json()["data"]
    assert len(recs) == 4 and all(len(x["data"]["embedding"]) == 384 for x in recs)
    rows_of_run = wait_for(lambda: [x for x in gateway.ledger() if x["request_id"] == rid] or None, 10,
                           "the embed step's ledger rows")
    assert len(rows_of_run) == 2 and {x["role"] for x in rows_of_run} == {"embedding"}  # two batches of 2
    assert {x["route"] for x in rows_of_run} == {"minilm"}
    other = [{"id": f"o{i}", "text": t} for i, t in enumerate(
        ["the quarterly earnings call", "GPU kernel launch latency", "a recipe for sourdough", "football scores"])]
    call(gateway, key, "POST", "/admin/datasets", json={"name": "support", "records": other})
    shifted = call(gateway, key, "POST", "/admin/pipelines/runs", json={"pipeline": spec, "input": "support"}).json()
    check = shifted["checks"][0]
    assert shifted["status"] == "rejected" and not check["passed"] and check["detail"]["mmd2"] > 0.05, check
    ledger = call(gateway, key, "POST", "/admin/datasets", json={"name": "traffic", "ledger": {"route": "minilm"}})
    assert ledger.status_code == 200, ledger.text
    captured = call(gateway, key, "GET", "/admin/datasets/traffic/versions/1/records").json()["data"]
    assert {x["data"]["request_id"] for x in captured} >= {rid} and all(x["data"]["route"] == "minilm"
                                                                       for x in captured)
