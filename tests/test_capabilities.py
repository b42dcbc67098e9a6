"""Capabilities: honoured, or refused with a 400 naming the field before any engine is called; n > 1 fanned
out where the upstream cannot; ``GET /v1/models/{id}``. In-process gateway on a real (fault) upstream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from strata.app import create_app
from strata.config.settings import load_settings
from strata.engines.capabilities import PERMISSIVE, Capabilities, combine, require
from strata.engines.kv_budget import KvBudget, prompt_bound
from strata.errors import InvalidRequest
from tests.servers import ADMIN_KEY, openai_route
from tests.upstreams import FaultyUpstream

HI = [{"role": "user", "content": "Hi"}]
IMAGE = [{"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                      {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
LIMITED = {"tools": False, "vision": False, "audio": False, "json_schema": False, "logprobs": False, "native_n": False,
           "max_n": 4, "dimensions": False, "embedding_size": 27}


@pytest.fixture
async def client(upstream: FaultyUpstream, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    routes = [openai_route("full", upstream.base_url, "ok"),
              openai_route("plain", upstream.base_url, "ok", capabilities=LIMITED)]
    app = create_app(load_settings(None, data_dir=tmp_path, routes=routes, admin_key=ADMIN_KEY))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://strata",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
            yield c


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": IMAGE}, "messages[0].content[1].image_url"),
    ("/v1/chat/completions", {"messages": HI, "tools": TOOLS}, "tools"),
    ("/v1/chat/completions", {"messages": HI, "response_format": {"type": "json_object"}}, "response_format"),
    ("/v1/chat/completions", {"messages": HI, "logprobs": True}, "logprobs"),
    ("/v1/chat/completions", {"messages": HI, "n": 5}, "n"),
    ("/v1/chat/completions", {"messages": [*HI, {"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}]},
     "messages[1].tool_calls"),
    ("/v1/embeddings", {"input": "a cat", "dimensions": 8}, "dimensions"),
    ("/v1/chat/completions", {"messages": HI, "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
])
async def test_missing_capability_is_a_400_naming_the_field_and_no_engine_call(
        client: httpx.AsyncClient, upstream: FaultyUpstream, path: str, body: dict[str, Any], param: str) -> None:
    hits = upstream.hits
    r = await client.post(path, json={"model": "plain", **body})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["param"]) == ("invalid_request_error", param), err
    assert upstream.hits == hits  # refused before any engine call: nothing for the breaker to count
    # the same request on a route whose upstream can do it is served
    assert (await client.post(path, json={"model": "full", **body})).status_code == 200
    ok = await client.post("/v1/chat/completions", json={"model": "plain", "messages": HI})
    assert ok.status_code == 200  # and the limited route keeps serving


async def test_native_size_dimensions_are_accepted(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/embeddings", json={"model": "plain", "input": "a cat", "dimensions": 27})
    assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 27


async def test_n_is_fanned_out_with_usage_summed(client: httpx.AsyncClient, upstream: FaultyUpstream) -> None:
    hits = upstream.hits
    r = await client.post("/v1/chat/completions", json={"model": "plain", "messages": HI, "n": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] for c in body["choices"])
    assert body["usage"] == {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}
    assert upstream.hits == hits + 3

    events = await _sse(client, {"model": "plain", "messages": HI, "n": 2, "stream": True,
                                 "stream_options": {"include_usage": True}})
    indexes = {c["index"] for e in events for c in e["choices"]}
    finishes = [c["finish_reason"] for e in events for c in e["choices"] if c["finish_reason"]]
    assert indexes == {0, 1} and finishes == ["stop", "stop"]
    assert len({e["id"] for e in events}) == 1  # one answer
    usage = [e["usage"] for e in events if e.get("usage")]
    assert usage == [{"prompt_tokens": 14, "completion_tokens": 10, "total_tokens": 24}]
    assert events[-1]["choices"] == []


async def _sse(client: httpx.AsyncClient, body: dict[str, Any]) -> list[dict[str, Any]]:
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = [line async for line in r.aiter_lines() if line.startswith("data: {")]
    return [orjson.loads(line[6:]) for line in lines]


async def test_n_goes_to_an_upstream_that_answers_it_itself(client: httpx.AsyncClient,
                                                            upstream: FaultyUpstream) -> None:
    hits = upstream.hits
    r = await client.post("/v1/chat/completions", json={"model": "full", "messages": HI, "n": 2})
    assert r.status_code == 200 and upstream.hits == hits + 1


async def test_models_retrieve(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/models/plain")
    assert r.status_code == 200
    assert r.json()["id"] == "plain" and r.json()["object"] == "model" and r.json()["owned_by"] == "strata"
    missing = await client.get("/v1/models/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    key = await client.post("/admin/keys", json={"name": "narrow", "team": "t", "allowed_routes": ["full"]})
    secret = key.json()["key"]
    forbidden = await client.get("/v1/models/plain", headers={"Authorization": f"Bearer {secret}"})
    assert forbidden.status_code == 404  # a route the key may not use looks like no route at all
    assert (await client.get("/v1/models/full", headers={"Authorization": f"Bearer {secret}"})).status_code == 200


async def test_engine_view_shows_each_deployments_capabilities(client: httpx.AsyncClient) -> None:
    for _ in range(100):  # the health loop's first pass
        view = (await client.get("/admin/engines")).json()
        if "plain-dep" in view:
            break
        await asyncio.sleep(0.05)
    assert view["plain-dep"]["capabilities"]["tools"] is False
    assert view["plain-dep"]["capabilities"]["embedding_size"] == 27
    assert view["full-dep"]["capabilities"]["vision"] is True


def test_a_route_can_do_what_all_its_deployments_can() -> None:
    local = Capabilities(tools=False, vision=False, max_n=8, native_n=False)
    with pytest.raises(InvalidRequest) as err:
        require(Capabilities(functions=False), "m", "chat", {"messages": HI, "functions": [{"name": "f"}]})
    assert err.value.param == "functions"
    both = combine([PERMISSIVE, local])
    assert (both.tools, both.vision, both.json_schema, both.max_n, both.native_n) == (False, False, True, 8, False)
    with pytest.raises(InvalidRequest) as err:
        require(both, "m", "chat", {"messages": HI, "tool_choice": "required"})
    assert err.value.param == "tool_choice"
    require(both, "m", "chat", {"messages": HI, "tools": [], "tool_choice": "none"})  # nothing asked: fine
    plain = combine([PERMISSIVE, Capabilities(echo=False, suffix=False, best_of=False, audio_output=False)])
    for field_, value in (("echo", True), ("suffix", "end"), ("best_of", 3)):
        with pytest.raises(InvalidRequest) as err:
            require(plain, "m", "completion", {"prompt": "x", field_: value})
        assert err.value.param == field_
    require(plain, "m", "completion", {"prompt": "x", "echo": False, "suffix": None, "best_of": 2, "n": 2})
    with pytest.raises(InvalidRequest) as err:
        require(plain, "m", "chat", {"messages": HI, "modalities": ["text", "audio"]})
    assert err.value.param == "modalities"
    require(plain, "m", "chat", {"messages": HI, "modalities": ["text"]})
    embeds = combine([Capabilities(embedding_size=384, dimensions=False)])
    require(embeds, "m", "embeddings", {"input": "x", "dimensions": 384})
    with pytest.raises(InvalidRequest):
        require(embeds, "m", "embeddings", {"input": "x", "dimensions": 128})


async def test_kv_budget_queues_first_come_first_served_and_frees_on_cancel() -> None:
    kv = KvBudget(100)
    order: list[str] = []

    async def use(name: str, tokens: int, release: asyncio.Event) -> None:
        async with kv.hold(tokens):
            order.append(name)
            await release.wait()

    go = [asyncio.Event() for _ in range(4)]
    first = asyncio.create_task(use("a", 60, go[0]))
    await settle()
    big = asyncio.create_task(use("b", 70, go[1]))  # does not fit while a runs
    small = asyncio.create_task(use("c", 10, go[2]))  # would fit, but waits its turn behind b
    huge = asyncio.create_task(use("d", 500, go[3]))  # larger than the pool: runs alone
    await settle()
    assert order == ["a"]
    big.cancel()  # a caller that gives up leaves the queue
    await settle()
    assert order == ["a", "c"] and kv.free == 30
    go[0].set()
    go[2].set()
    await asyncio.wait_for(first, 1)
    await asyncio.wait_for(small, 1)
    await settle()
    assert order == ["a", "c", "d"] and kv.free == 0
    go[3].set()
    await asyncio.wait_for(huge, 1)
    assert kv.free == 100
    assert prompt_bound({"messages": [{"role": "user", "content": "héllo"}]}) >= len("héllo".encode())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)
