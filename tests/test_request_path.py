"""The request path's seams, as clients and operators see them.

Cheap refusals come before expensive work (a 429 costs no embeddings and no summary); internal calls
(embeddings for complexity scoring and the semantic cache, the context summary) go through the same
attempts as client requests (retries, fallbacks, breakers, attempt metrics, a ledger row with their own
role); any failure inside the gateway is an OpenAI-shaped 500 with ``X-Request-Id`` and a ledger row that
says 500; a client that leaves before the first chunk releases every hold at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ADMIN_KEY, StrataProcess, ledger_rows, wait_for
from tests.test_context_window import conversation
from tests.test_traffic import dep, eventually, gateway, metric
from tests.upstreams import FaultyUpstream

LABELLED = [{"text": "tensor sharding across pods", "hard": True}, {"text": "hello there friend", "hard": False}]
PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}  # "hi" at max_tokens 3: at most $0.013


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FaultyUpstream]]:
    with FaultyUpstream("llm") as llm, FaultyUpstream("emb-a") as a, FaultyUpstream("emb-b") as b:
        yield {"llm": llm, "emb-a": a, "emb-b": b}


@pytest.fixture
def ups(servers: dict[str, FaultyUpstream]) -> dict[str, FaultyUpstream]:
    for up in servers.values():
        up.mode, up.embed_mode, up.hits, up.embed_hits, up.disconnects = None, None, 0, 0, 0
    return servers


def scored_route(ups: dict[str, FaultyUpstream], **cfg: Any) -> dict[str, Any]:
    """Complexity-routed (nearest labelled examples by embeddings through route ``emb``)."""
    return {"name": "m", "deployments": [dep("small", ups["llm"], "ok", tier="cheap"),
                                         dep("large", ups["llm"], "ok", tier="strong")],
            "complexity": {"embeddings_route": "emb", "examples": LABELLED, "k": 1}, **cfg}


def emb_route(ups: dict[str, FaultyUpstream]) -> dict[str, Any]:
    """Embeddings: ``emb-a`` first, ``emb-b`` its fallback."""
    return {"name": "emb", "retries": 0, "retry_backoff": 0.01,
            "deployments": [dep("emb-a", ups["emb-a"], "e"), dep("emb-b", ups["emb-b"], "e", role="fallback")]}


async def test_a_request_over_its_rate_limit_costs_no_embeddings_and_no_summary(
        ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    summarizer = {"name": "summ", "deployments": [dep("summ-d", ups["emb-b"], "ok")]}
    main = scored_route(ups, context={"policy": "summarize", "max_prompt_tokens": 300, "summarize_route": "summ"})
    async with gateway(tmp_path, main, emb_route(ups), summarizer, limits=[{"scope": "key", "rpm": 1}]) as client:
        ask = {"model": "m", "messages": conversation(30)}
        first = await client.post("/v1/chat/completions", json=ask)
        assert first.status_code == 200, first.text
        assert "summarized=yes" in first.headers["x-strata-context"]
        assert ups["emb-a"].embed_hits > 0 and ups["emb-b"].hits == 1  # scored by embeddings, summarised
        ups["emb-a"].embed_hits = ups["emb-b"].hits = 0

        refused = await client.post("/v1/chat/completions", json=ask)
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert (ups["emb-a"].embed_hits, ups["emb-b"].hits) == (0, 0), "a refused request paid for upstream work"


async def test_internal_embeddings_are_retried_on_the_fallback_and_accounted(
        ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["emb-a"].embed_mode = "err500"
    async with gateway(tmp_path, scored_route(ups), emb_route(ups)) as client:
        r = await client.post("/v1/chat/completions", headers={"X-Request-Id": "scored-1"},
                              json={"model": "m", "messages": [{"role": "user", "content": "tensor sharding"}]})
        assert r.status_code == 200, r.text
        rows = await eventually(lambda: len(rs := [row for row in ledger_rows(tmp_path) if row["role"] == "embedding"])
                                >= 2 and rs, "ledger rows of the internal embeddings (the examples', the prompt's)")
        assert {row["request_id"] for row in rows} == {"scored-1"}  # accounted to the request that needed them
        for row in rows:
            assert row["status"] == 200, (row["attempts"], row["error_type"], row["deployment"])
            assert (row["status"], row["route"], row["deployment"], row["endpoint"]) == (200, "emb", "emb-b",
                                                                                        "embeddings")
            assert [a["deployment"] for a in row["attempts"]] == ["emb-a", "emb-b"]
        assert ups["emb-b"].embed_hits == len(rows)
        assert await metric(client, "strata_upstream_attempts_total", deployment="emb-a",
                            outcome="bad_gateway") == len(rows)
        served = next(r for r in ledger_rows(tmp_path) if (r["request_id"], r["role"]) == ("scored-1", "primary"))
        assert served["tier"] == "strong"  # the nearest example (hard) decided: the embeddings were used


async def test_an_embeddings_deployment_at_max_in_flight_is_shed_for_internal_calls(
        ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["emb-a"].embed_mode = "slow"  # each embedding holds emb-a for 0.3 s
    emb = emb_route(ups)
    emb["deployments"][0]["max_in_flight"] = 1
    async with gateway(tmp_path, scored_route(ups), emb) as client:
        asks = [client.post("/v1/chat/completions", headers={"X-Request-Id": f"busy-{i}"},
                            json={"model": "m", "messages": [{"role": "user", "content": f"tensor sharding {i}"}]})
                for i in range(3)]
        assert [r.status_code for r in await asyncio.gather(*asks)] == [200] * 3
        rows = await eventually(lambda: len(rs := [r for r in ledger_rows(tmp_path) if r["role"] == "embedding"])
                                >= 4 and rs, "ledger rows of the internal embeddings")
        shed = [row for row in rows if row["deployment"] == "emb-b"]
        assert shed and all([a["deployment"] for a in row["attempts"]] == ["emb-b"] for row in shed), rows
        assert ups["emb-b"].embed_hits == len(shed)  # emb-a, full, was not even tried


async def test_an_exception_inside_the_gateway_is_an_openai_shaped_500_with_its_request_id(
        ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    bad = {"name": "bad", "deployments": [dep("bad-d", ups["llm"], "malformed")]}
    async with gateway(tmp_path, bad) as client:
        ask = {"model": "bad", "messages": [{"role": "user", "content": "hi"}]}
        r = await client.post("/v1/chat/completions", json=ask, headers={"X-Request-Id": "broken-1"})
        assert r.status_code == 500, r.text
        assert r.headers["x-request-id"] == "broken-1"
        assert r.json()["error"]["type"] == "server_error"

        async with client.stream("POST", "/v1/chat/completions", json={**ask, "stream": True},
                                 headers={"X-Request-Id": "broken-2"}) as s:
            assert s.headers["x-request-id"] == "broken-2"
            text = (await s.aread()).decode()
        assert '"type":"server_error"' in text and "[DONE]" not in text

        rows = await eventually(lambda: (rs := {row["request_id"]: row for row in ledger_rows(tmp_path)})
                                and len(rs) >= 2 and rs, "two ledger rows")
        assert (rows["broken-1"]["status"], rows["broken-1"]["error_type"]) == (500, "internal_error")
        assert (rows["broken-2"]["status"], rows["broken-2"]["error_type"]) == (500, "internal_error")


@pytest.fixture
def slow_strata(ups: dict[str, FaultyUpstream], tmp_path: Path) -> Iterator[StrataProcess]:
    llm = ups["llm"]
    routes = [{"name": name, "deployments": [{"name": f"{name}-d", "price": PRICE, "engine": {
        "type": "openai", "base_url": llm.base_url, "model": model, "read_timeout": 60}}]}
        for name, model in (("slow", "slow-first"), ("ok", "ok"))]
    config = {"routes": routes, "supervisor": {"health_interval": 0.2}, "ledger": {"flush_interval": 0.05},
              "budgets": [{"scope": "key", "subject": "admin-env", "period": "day", "cap_usd": 0.02}]}
    proc = StrataProcess(tmp_path / "strata", config).start(ready_timeout=60)
    yield proc
    proc.stop()


async def test_a_client_gone_before_the_first_chunk_releases_every_hold(ups: dict[str, FaultyUpstream],
                                                                        slow_strata: StrataProcess) -> None:
    proc, llm = slow_strata, ups["llm"]
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    async with httpx.AsyncClient(base_url=proc.url, headers=headers, timeout=30) as client:
        streaming = asyncio.create_task(client.post("/v1/chat/completions", headers={"X-Request-Id": "gone-1"},
                                                    json={**ask, "model": "slow", "stream": True}))
        await eventually(lambda: llm.hits == 1, "the stream to reach the upstream")
        held = await client.post("/v1/chat/completions", json={**ask, "model": "ok"})
        assert held.status_code == 429 and held.json()["error"]["code"] == "budget_exceeded", held.text
        assert proc.metric("strata_requests_in_flight", route="slow") == 1.0
        await eventually(lambda: proc.metric("strata_deployment_in_flight", deployment="slow-d") == 1.0,
                         "the deployment to count the stream")

        streaming.cancel()  # the client disconnects before the first chunk
        await asyncio.gather(streaming, return_exceptions=True)

        await eventually(lambda: llm.disconnects == 1, "the upstream to see its connection closed", timeout=5)
        assert proc.metric("strata_requests_in_flight", route="slow") == 0.0
        await eventually(lambda: proc.metric("strata_deployment_in_flight", deployment="slow-d") == 0.0,
                         "the deployment's in-flight count back to 0", timeout=5)
        again = await client.post("/v1/chat/completions", json={**ask, "model": "ok"})
        assert again.status_code == 200, again.text  # the stream's budget hold was released

        other = (await client.post("/admin/keys", json={"name": "svc", "team": "t"})).json()["key"]  # no budget
        waiting = asyncio.create_task(client.post(  # a JSON answer, same story
            "/v1/chat/completions", json={**ask, "model": "slow"},
            headers={"X-Request-Id": "gone-2", "Authorization": f"Bearer {other}"}))
        await eventually(lambda: llm.hits == 3, "the JSON request to reach the upstream")
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        await eventually(lambda: llm.disconnects == 2, "the upstream to see the JSON request's connection closed",
                         timeout=5)
        assert proc.metric("strata_requests_in_flight", route="slow") == 0.0
    rows = wait_for(lambda: (rs := {r["request_id"]: r for r in proc.ledger()}) and {"gone-1", "gone-2"} <= set(rs)
                    and rs, 5, "the ledger rows of both requests")
    for rid in ("gone-1", "gone-2"):
        assert (rows[rid]["status"], rows[rid]["error_type"]) == (499, "client_disconnected"), rid
    assert "Traceback" not in proc.log()
