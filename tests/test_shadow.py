"""Shadow deployments as clients and operators see them: a mirrored share of traffic the client never waits
for nor sees, both answers stored side by side and compared, and the report that sums them up.

The served replica and the shadow are ``FaultyUpstream`` servers whose ``whoami`` reply names them; the
embeddings route for the agreement score is one too (its vectors are letter counts, so different answers
score below 1). The last test runs the real bundled models.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from strata.store.tables import Feedback, ShadowResult
from tests.conftest import healthy, named_upstreams, needs_models
from tests.servers import ADMIN_KEY, StrataProcess, ledger_rows, table_rows, wait_for
from tests.test_cli import assert_one_line_error, strata
from tests.test_traffic import HI, chat, dep, eventually, gateway, metric, route, sdk, served_by
from tests.upstreams import REPLY, FaultyUpstream, letter_counts

PRICE = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
MIRRORED = "strata_shadow_requests_total"


@pytest.fixture(scope="module")
def shadow_servers() -> Iterator[dict[str, FaultyUpstream]]:
    yield from named_upstreams("primary", "shadow", "emb")


@pytest.fixture
def ups(shadow_servers: dict[str, FaultyUpstream]) -> dict[str, FaultyUpstream]:
    """The served replica, the shadow and the embeddings upstream, healthy and with counters at zero."""
    return healthy(shadow_servers)


def emb_route(ups: dict[str, FaultyUpstream]) -> dict[str, Any]:
    return {"name": "emb", "deployments": [dep("emb-dep", ups["emb"], "letters")]}


def shadowed(ups: dict[str, FaultyUpstream], model: str = "whoami", traffic: float = 100,
             **shadow: Any) -> dict[str, Any]:
    """Route ``m``: ``main`` serves, ``mirror`` shadows; both priced; agreement through the ``emb`` route."""
    return route(dep("main", ups["primary"], model, price=PRICE),
                 dep("mirror", ups["shadow"], model, role="shadow", traffic=traffic, price=PRICE),
                 shadow={"agreement_route": "emb", **shadow})


def shadow_results(data_dir: Path) -> list[dict[str, Any]]:
    return table_rows(data_dir, ShadowResult.__table__)  # type: ignore[arg-type]


async def stored(data_dir: Path, n: int) -> list[dict[str, Any]]:
    """The shadow results once ``n`` mirrored requests are stored, oldest first."""
    return await eventually(lambda: rows if len(rows := shadow_results(data_dir)) >= n else None,
                            f"{n} shadow results")


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


async def ask(oai: openai.AsyncOpenAI, model: str, stream: bool) -> tuple[str, float]:
    """The answer's text through the official SDK, and how long the client waited for all of it."""
    started = time.perf_counter()
    if stream:
        chunks = await oai.chat.completions.create(model=model, messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
    else:
        text = (await oai.chat.completions.create(model=model, messages=HI)).choices[0].message.content or ""
    return text, time.perf_counter() - started


# --- the client never notices the shadow ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_stalled_shadow_neither_delays_nor_changes_the_answer(ups: dict[str, FaultyUpstream], tmp_path: Path,
                                                                      stream: bool) -> None:
    """The shadow hangs for 60 s; the client gets the served answer as fast as on a route without a shadow."""
    ups["shadow"].mode = "stall"
    plain = {"name": "plain", "deployments": [dep("solo", ups["primary"])]}
    expected = REPLY if stream else "primary"  # the fake upstream streams its fixed reply
    async with gateway(tmp_path, shadowed(ups), plain) as client, sdk(client) as oai:
        await ask(oai, "plain", stream)  # warm both paths up
        await ask(oai, "m", stream)
        baseline = [await ask(oai, "plain", stream) for _ in range(5)]
        mirrored = [await ask(oai, "m", stream) for _ in range(5)]
        assert {text for text, _ in mirrored} == {expected}
        state = client.app.state.strata  # type: ignore[attr-defined]
        await eventually(lambda: ups["shadow"].hits == 4, "the mirrors to reach the stalled shadow")
        assert state.tasks.shadow_running["m"] == 4, "the answers came back while their mirrors were still waiting"
        assert shadow_results(tmp_path) == []
        assert await metric(client, MIRRORED, route="m", deployment="mirror", outcome="dropped") == 2.0
    ratio = statistics.median(s for _, s in mirrored) / statistics.median(s for _, s in baseline)
    assert ratio < 20, f"mirrored requests took {ratio:.1f}x as long as unmirrored ones"


async def test_a_failing_shadow_is_recorded_and_never_seen(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["shadow"].mode = "err500"
    async with gateway(tmp_path, shadowed(ups), emb_route(ups)) as client:
        for i in range(3):
            assert served_by(await chat(client, rid=f"shadow-fails-{i}")) == "primary"
        rows = await stored(tmp_path, 3)
        assert await metric(client, MIRRORED, route="m", deployment="mirror", outcome="error") == 3.0
        assert await metric(client, MIRRORED, route="m", deployment="mirror", outcome="ok") is None
    assert {(r["shadow_error"], r["shadow_answer"], r["primary_answer"], r["exact_match"], r["agreement"])
            for r in rows} == {("bad_gateway", None, "primary", None, None)}
    shadow_rows = [r for r in ledger_rows(tmp_path) if r["role"] == "shadow"]
    assert sorted((r["request_id"], r["status"], r["error_type"]) for r in shadow_rows) == [
        (f"shadow-fails-{i}", 502, "bad_gateway") for i in range(3)]


# --- both answers stored and compared --------------------------------------------------------------------------


async def test_different_answers_are_stored_costed_and_scored(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    async with gateway(tmp_path, shadowed(ups), emb_route(ups)) as client:
        assert served_by(await chat(client, rid="mirrored-1")) == "primary"
        (row,) = await stored(tmp_path, 1)
        assert await metric(client, MIRRORED, route="m", deployment="mirror", outcome="ok") == 1.0
        ledger = await eventually(lambda: rs if len(rs := ledger_rows(tmp_path)) == 2 else None, "two ledger rows")
    assert (row["request_id"], row["route"], row["primary_deployment"], row["shadow_deployment"]) == (
        "mirrored-1", "m", "main", "mirror")
    assert (row["primary_answer"], row["shadow_answer"], row["exact_match"]) == ("primary", "shadow", False)
    assert row["agreement"] == pytest.approx(cosine(letter_counts("primary"), letter_counts("shadow")), abs=1e-4)
    assert row["agreement"] < 0.9
    assert (row["primary_tokens"], row["shadow_tokens"], row["shadow_error"]) == (3, 3, None)
    assert row["primary_ms"] > 0 and row["shadow_ms"] > 0

    served, mirror = sorted(ledger, key=lambda r: r["role"])
    assert (served["role"], served["deployment"], served["request_id"], served["status"]) == (
        "primary", "main", "mirrored-1", 200)
    assert (mirror["role"], mirror["deployment"], mirror["request_id"], mirror["status"]) == (
        "shadow", "mirror", "mirrored-1", 200)
    assert (mirror["prompt_tokens"], mirror["completion_tokens"]) == (7, 3)
    assert mirror["cost_usd"] == pytest.approx((7 * 1.0 + 3 * 2.0) / 1e6)
    assert (row["primary_cost"], row["shadow_cost"]) == (served["cost_usd"], mirror["cost_usd"])
    assert ups["shadow"].hits == 1 and ups["primary"].hits == 1


async def test_a_streamed_answer_is_stored_in_full_and_matches(ups: dict[str, FaultyUpstream],
                                                               tmp_path: Path) -> None:
    """The client streams; the shadow is asked for one JSON answer; the whole streamed text is compared."""
    async with gateway(tmp_path, shadowed(ups, "ok", store_chars=12), emb_route(ups)) as client, \
            sdk(client) as oai:
        text, _ = await ask(oai, "m", stream=True)
        assert text == REPLY
        (row,) = await stored(tmp_path, 1)
    assert (row["exact_match"], row["agreement"], row["shadow_error"]) == (True, 1.0, None)
    assert (row["primary_answer"], row["shadow_answer"]) == (REPLY[:12], REPLY[:12]), "cut at store_chars"
    assert (row["primary_tokens"], row["shadow_tokens"]) == (5, 3), "streamed usage vs the JSON answer's usage"


async def test_completions_are_mirrored_and_compared_too(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    async with gateway(tmp_path, shadowed(ups), emb_route(ups)) as client:
        r = await client.post("/v1/completions", json={"model": "m", "prompt": "Who are you?"})
        assert r.status_code == 200 and r.json()["choices"][0]["text"] == "primary"
        (row,) = await stored(tmp_path, 1)
    assert (row["primary_answer"], row["shadow_answer"], row["exact_match"]) == ("primary", "shadow", False)


async def test_without_an_agreement_route_only_exact_match_is_scored(ups: dict[str, FaultyUpstream],
                                                                     tmp_path: Path) -> None:
    async with gateway(tmp_path, shadowed(ups, agreement_route=None)) as client:
        assert served_by(await chat(client)) == "primary"
        (row,) = await stored(tmp_path, 1)
    assert (row["exact_match"], row["agreement"]) == (False, None)


# --- capacity and share --------------------------------------------------------------------------------------


async def test_mirrors_beyond_max_concurrency_are_dropped_and_counted(ups: dict[str, FaultyUpstream],
                                                                      tmp_path: Path) -> None:
    ups["shadow"].mode = "stall"
    async with gateway(tmp_path, shadowed(ups, max_concurrency=1)) as client:
        for _ in range(4):
            assert served_by(await chat(client)) == "primary"
        await eventually(lambda: ups["shadow"].hits == 1, "the one mirror to reach the shadow")
        assert await metric(client, MIRRORED, route="m", deployment="mirror", outcome="dropped") == 3.0
        assert client.app.state.strata.tasks.shadow_running["m"] == 1  # type: ignore[attr-defined]
    assert ups["shadow"].hits == 1 and ups["primary"].hits == 4


async def test_traffic_share_is_roughly_respected(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    async with gateway(tmp_path, shadowed(ups, "ok", traffic=30, agreement_route=None, max_concurrency=100)) as client:
        for _ in range(20):
            replies = [await chat(client) for _ in range(10)]
            assert all(r.status_code == 200 for r in replies)
        state = client.app.state.strata  # type: ignore[attr-defined]
        await eventually(lambda: state.tasks.shadow_running["m"] == 0, "every mirror to finish")
        mirrored = ups["shadow"].hits
        assert 35 <= mirrored <= 85, f"{mirrored} of 200 requests mirrored at 30%"
        await stored(tmp_path, mirrored)
        assert await metric(client, MIRRORED, route="m", deployment="mirror", outcome="ok") == mirrored
        assert await metric(client, MIRRORED, route="m", deployment="mirror", outcome="dropped") is None
    assert ups["primary"].hits == 200


# --- report: admin API and CLI -------------------------------------------------------------------------------


async def test_admin_starts_a_shadow_and_reports_what_was_mirrored(ups: dict[str, FaultyUpstream],
                                                                   tmp_path: Path) -> None:
    plain = route(dep("main", ups["primary"], price=PRICE), shadow={"agreement_route": "emb"})
    async with gateway(tmp_path, plain, emb_route(ups)) as client:
        r = await client.post("/admin/routes/m/shadow", json={"engine": {"base_url": ups["shadow"].base_url},
                                                              "traffic": 100})
        assert r.status_code == 200, r.text
        assert (await client.get("/admin/routes/m/shadow")).json() == {"route": "m", "shadows": [], "recent": []}
        for _ in range(4):
            assert served_by(await chat(client)) == "primary"
        await stored(tmp_path, 4)
        ups["shadow"].mode = "err500"
        assert served_by(await chat(client)) == "primary"
        await stored(tmp_path, 5)
        ledger = await eventually(lambda: rs if len(rs := ledger_rows(tmp_path)) == 10 else None, "ten rows")

        report = (await client.get("/admin/routes/m/shadow", params={"since": "24h"})).json()
        again = await client.post("/admin/routes/m/shadow", json={"traffic": 5})
        bad_window = await client.get("/admin/routes/m/shadow", params={"since": "soon"})
        unknown = await client.get("/admin/routes/nope/shadow")
    (s,) = report["shadows"]
    assert (s["shadow_deployment"], s["primary_deployments"], s["requests"], s["shadow_errors"]) == (
        "m-shadow", ["main"], 5, 1)
    assert s["exact_match_rate"] == 0.0
    expected = round(cosine(letter_counts("primary"), letter_counts("shadow")), 4)
    assert (s["agreement"]["mean"], s["agreement"]["min"]) == (pytest.approx(expected), pytest.approx(expected))
    assert s["completion_tokens"]["shadow"]["mean"] == 3.0
    costs = {role: sum(r["cost_usd"] for r in ledger if r["role"] == role) for role in ("primary", "shadow")}
    assert s["cost_usd"]["primary"] == pytest.approx(costs["primary"])
    assert s["cost_usd"]["shadow"] == pytest.approx(costs["shadow"]) and costs["shadow"] > 0
    assert [(x["primary"], x["shadow"]) for x in report["recent"]] == [("primary", None)] + [("primary", "shadow")] * 4
    assert again.status_code == 400 and again.json()["error"]["code"] == "shadow_exists"
    assert bad_window.status_code == 400 and bad_window.json()["error"]["param"] == "since"
    assert unknown.status_code == 404


def test_cli_deploys_a_shadow_and_prints_its_report(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    config = {"routes": [route(dep("main", ups["primary"], price=PRICE), shadow={"agreement_route": "emb"}),
                         emb_route(ups)]}
    proc = StrataProcess(tmp_path, config).start(60)
    try:
        at = ("--url", proc.url, "--key", ADMIN_KEY)
        p = strata("deploy", "m", "--shadow", "100%", "--base-url", ups["shadow"].base_url, *at)
        assert p.returncode == 0, p.stderr
        assert "m-shadow" in p.stdout and "shadow" in p.stdout

        client = proc.client().with_options(timeout=20)
        for _ in range(3):
            assert client.chat.completions.create(model="m", messages=HI).choices[0].message.content == "primary"
        wait_for(lambda: len(shadow_results(tmp_path)) == 3, 10, "three shadow results")

        p = strata("shadow", "report", "m", *at, env={"COLUMNS": "200"})
        assert p.returncode == 0, p.stderr
        for needle in ("3 mirrored requests, 0 shadow errors", "served (main)", "shadow (m-shadow)",
                       "latency ms p95", "cost USD (total)", "exact match rate 0"):
            assert needle in p.stdout, p.stdout
        data = json.loads(strata("shadow", "report", "m", "--since", "1h", "--json", *at).stdout)
        assert data["shadows"][0]["requests"] == 3

        assert_one_line_error(strata("shadow", "report", "nope", *at), "nope")
    finally:
        proc.stop()


# --- feedback goes to the served deployment --------------------------------------------------------------------


async def test_feedback_on_a_mirrored_request_goes_to_the_served_deployment(ups: dict[str, FaultyUpstream],
                                                                            tmp_path: Path) -> None:
    async with gateway(tmp_path, shadowed(ups, agreement_route=None), ledger={"flush_interval": 5}) as client:
        assert served_by(await chat(client, rid="judged")) == "primary"
        await stored(tmp_path, 1)
        assert ledger_rows(tmp_path) == [], "both rows still wait in the ledger buffer"
        pending = await client.post("/v1/feedback", json={"request_id": "judged", "score": 1})
    written = {r["role"] for r in ledger_rows(tmp_path)}
    assert written == {"primary", "shadow"}
    async with gateway(tmp_path, shadowed(ups, agreement_route=None)) as client:
        flushed = await client.post("/v1/feedback", json={"request_id": "judged", "score": 0})
    assert pending.status_code == flushed.status_code == 200, (pending.text, flushed.text)
    assert pending.json()["deployment"] == flushed.json()["deployment"] == "main"
    rows = table_rows(tmp_path, Feedback.__table__)  # type: ignore[arg-type]
    assert [(f["request_id"], f["deployment"], f["score"]) for f in rows] == [("judged", "main", 1.0),
                                                                               ("judged", "main", 0.0)]


# --- real models ---------------------------------------------------------------------------------------------


SMOL = {"type": "llamacpp", "n_parallel": 1, "n_ctx": 1024, "threads": 1}
MODEL_CONFIG = {"routes": [
    {"name": "chat", "deployments": [
        {"name": "smol-a", "engine": SMOL, "price": {"busy_hour": 0.1}},
        {"name": "smol-b", "engine": SMOL, "role": "shadow", "traffic": 100, "price": {"busy_hour": 0.1}}]},
    {"name": "minilm", "deployments": [{"name": "minilm-local", "engine": {"type": "sentence-transformers"}}]},
]}


def nth_result(data_dir: Path, n: int) -> dict[str, Any]:
    rows = wait_for(lambda: rs if len(rs := shadow_results(data_dir)) >= n else None, 60, f"{n} shadow results")
    return rows[n - 1]


@pytest.mark.model
@needs_models
def test_real_models_agree_with_themselves_and_score_other_answers(tmp_path: Path) -> None:
    """Same model, temperature 0: identical answers (agreement 1). Sampled: MiniLM scores how close they are."""
    proc = StrataProcess(tmp_path, MODEL_CONFIG).start(300)
    try:
        client = proc.client().with_options(timeout=60)
        greedy = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "Name a fruit."}],
                                                max_tokens=8, temperature=0)
        row = nth_result(tmp_path, 1)
        assert row["primary_answer"] == greedy.choices[0].message.content
        assert (row["shadow_answer"], row["exact_match"], row["agreement"]) == (row["primary_answer"], True, 1.0)

        for i in range(2, 6):  # sampled answers almost always differ; try a few times
            client.chat.completions.create(model="chat", max_tokens=12, temperature=1.5,
                                           messages=[{"role": "user", "content": "Write about the sea."}])
            row = nth_result(tmp_path, i)
            if not row["exact_match"]:
                break
        assert row["exact_match"] is False, "four sampled pairs of answers were identical"
        assert isinstance(row["agreement"], float) and -1.0 <= row["agreement"] < 1.0
        assert row["shadow_error"] is None and row["shadow_cost"] > 0
        report = proc.admin("GET", "/admin/routes/chat/shadow").json()
        assert report["shadows"][0]["agreement"]["min"] == row["agreement"]
    finally:
        proc.stop()


