"""The Responses API (``POST /v1/responses``, ``GET /v1/responses/{id}``) through the official SDK.

An in-process gateway on a real upstream: ``echo`` answers with the messages it was sent (what the gateway
made of the Responses input), ``tools`` answers with a tool call. Then one request to the bundled model.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import FunctionToolParam

from strata.gateway.response_store import ResponseStore
from strata.governance.keys import Principal
from strata.store.db import open_database
from tests.conftest import needs_models
from tests.servers import StrataProcess, ledger_rows
from tests.test_traffic import dep, eventually, gateway, route, sdk
from tests.upstreams import REPLY, TOOL_CALL, FaultyUpstream

WEATHER: FunctionToolParam = {"type": "function", "name": "weather_in", "strict": False,
                              "description": "The weather in a city",
                              "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                             "required": ["city"]}}


@pytest.fixture
async def client(upstream: FaultyUpstream, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    upstream.mode = None
    echo = route(dep("echo", upstream, "echo"))
    stream = {**route(dep("fixed", upstream, "ok")), "name": "s"}
    tools = {**route(dep("tools", upstream, "tools")), "name": "t"}
    async with gateway(tmp_path, echo, stream, tools) as c:
        yield c


def sent(response: Any) -> list[dict[str, Any]]:
    """The chat messages the echo upstream received, from the response's text."""
    messages: list[dict[str, Any]] = json.loads(response.output_text)
    return messages


async def test_create_maps_input_and_instructions_and_reports_usage(client: httpx.AsyncClient,
                                                                    tmp_path: Path) -> None:
    async with sdk(client) as oai:
        r = await oai.responses.create(model="m", input="hi", instructions="Be brief.", max_output_tokens=20)
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert sent(r) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage is not None and (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (7, 3, 10)
    row = await eventually(lambda: [x for x in ledger_rows(tmp_path) if x["route"] == "m"], "the ledger row")
    assert len(row) == 1 and row[0]["status"] == 200 and row[0]["prompt_tokens"] == 7


async def test_stream_tells_the_text_in_responses_events(client: httpx.AsyncClient, tmp_path: Path) -> None:
    async with sdk(client) as oai:
        stream = await oai.responses.create(model="s", input="hi", stream=True)
        events = [e async for e in stream]
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    for kind in ("response.output_item.added", "response.content_part.added", "response.output_text.done",
                 "response.content_part.done", "response.output_item.done"):
        assert kind in kinds
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == REPLY
    done = events[-1].response  # type: ignore[union-attr]
    assert done.output_text == REPLY and done.usage is not None and done.usage.total_tokens == 12
    assert [e.sequence_number for e in events] == list(range(len(events)))
    rows = await eventually(lambda: [x for x in ledger_rows(tmp_path) if x["route"] == "s"], "the ledger row")
    assert rows[0]["stream"] and rows[0]["completion_tokens"] == 5


async def test_previous_response_id_continues_the_conversation(client: httpx.AsyncClient) -> None:
    async with sdk(client) as oai:
        first = await oai.responses.create(model="m", input="My name is Ada.")
        second = await oai.responses.create(model="m", input="What is my name?", previous_response_id=first.id)
        again = await oai.responses.retrieve(first.id)
    assert sent(second) == [{"role": "user", "content": "My name is Ada."},
                            {"role": "assistant", "content": first.output_text},
                            {"role": "user", "content": "What is my name?"}]
    assert again.id == first.id and again.output_text == first.output_text


async def test_another_key_cannot_read_or_continue_a_response(client: httpx.AsyncClient) -> None:
    created = await client.post("/admin/keys", json={"name": "other", "team": "search"})
    other = created.json()["key"]
    async with sdk(client) as oai:
        mine = await oai.responses.create(model="m", input="secret")
        theirs = oai.with_options(api_key=other)
        with pytest.raises(openai.NotFoundError) as got:
            await theirs.responses.retrieve(mine.id)
        assert got.value.status_code == 404 and "not found" in got.value.message
        with pytest.raises(openai.NotFoundError):
            await theirs.responses.create(model="m", input="and?", previous_response_id=mine.id)
        with pytest.raises(openai.NotFoundError):
            await oai.responses.retrieve("resp_nope")
        unstored = await oai.responses.create(model="m", input="forget me", store=False)
        with pytest.raises(openai.NotFoundError):
            await oai.responses.retrieve(unstored.id)


async def test_tool_calls_become_function_call_items_and_back(client: httpx.AsyncClient) -> None:
    async with sdk(client) as oai:
        r = await oai.responses.create(model="t", input="Weather in Paris?", tools=[WEATHER],
                                       tool_choice="required")
        calls = [o for o in r.output if o.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "weather_in"  # the upstream calls the first tool it was given
        assert json.loads(calls[0].arguments) == {"city": "Paris"} and calls[0].call_id == TOOL_CALL["id"]
        follow = [{"type": "function_call", "call_id": calls[0].call_id, "name": "weather_in",
                   "arguments": calls[0].arguments},
                  {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp_c": 21}'}]
        answer = await oai.responses.create(model="m", input=follow,  # type: ignore[arg-type]
                                            previous_response_id=r.id)
    messages = sent(answer)
    assert messages[0] == {"role": "user", "content": "Weather in Paris?"}
    assert messages[1]["role"] == "assistant" and messages[1]["tool_calls"][0]["id"] == TOOL_CALL["id"]
    assert messages[-1] == {"role": "tool", "tool_call_id": TOOL_CALL["id"], "content": '{"temp_c": 21}'}


async def test_streamed_tool_call_arrives_whole(client: httpx.AsyncClient) -> None:
    async with sdk(client) as oai:
        stream = await oai.responses.create(model="t", input="Weather?", tools=[WEATHER],
                                            stream=True)
        events = [e async for e in stream]
    done = events[-1]
    assert done.type == "response.completed"
    call = done.response.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "Paris"}


async def test_bad_input_is_an_openai_error(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/responses", json={"model": "m", "input": [{"type": "file_search_call"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input[0]" and r.headers["x-request-id"]
    r = await client.post("/v1/responses", json={"model": "m", "input": "hi", "tools": [{"type": "web_search"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools[0]"


async def test_a_stream_that_dies_ends_with_response_failed(upstream: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("dies", upstream, "die"))) as c, sdk(c) as oai:
        stream = await oai.responses.create(model="m", input="hi", stream=True,
                                            extra_headers={"X-Request-Id": "resp-died"})
        events = [e async for e in stream]
        assert [e.type for e in events][-2:] == ["error", "response.failed"]
        assert events[-1].response.status == "failed"  # type: ignore[union-attr]
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta")  # what came first
        with pytest.raises(openai.InternalServerError) as got:  # the JSON answer: OpenAI's error, 502
            await oai.responses.create(model="m", input="hi")
        assert got.value.status_code == 502 and got.value.response.headers["x-request-id"]
    rows = await eventually(lambda: [x for x in ledger_rows(tmp_path) if x["route"] == "m"] or None, "rows")
    assert sorted(r["status"] for r in rows) == [502, 502]


async def test_the_routes_exact_cache_answers_a_repeated_request(upstream: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("fixed", upstream, "ok"), cache={"exact": True})) as c, sdk(c) as oai:
        before = upstream.hits
        first = await oai.responses.create(model="m", input="hi", temperature=0)
        raw = await oai.responses.with_raw_response.create(model="m", input="hi", temperature=0)
        stream = await oai.responses.create(model="m", input="hi", temperature=0, stream=True)
        events = [e async for e in stream]
    assert upstream.hits - before == 1
    assert raw.headers["x-strata-cache"] == "hit" and raw.parse().output_text == first.output_text == REPLY
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == REPLY
    assert events[-1].type == "response.completed"


async def test_limits_apply_to_responses(upstream: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("echo", upstream, "echo")), limits=[{"scope": "key", "rpm": 1}]) as c:
        secret = (await c.post("/admin/keys", json={"name": "svc", "team": "search"})).json()["key"]
        async with sdk(c) as oai:
            mine = oai.with_options(api_key=secret)
            await mine.responses.create(model="m", input="one")
            with pytest.raises(openai.RateLimitError):
                await mine.responses.create(model="m", input="two")


def test_a_stored_response_expires_after_its_ttl(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = ResponseStore(open_database(f"sqlite:///{tmp_path}/r.db"), ttl=timedelta(hours=1), clock=lambda: now[0])
    who = Principal("k1", "svc", "search", None, False)
    asyncio.run(store.put("resp_1", who, [{"role": "user", "content": "hi"}], {"id": "resp_1"}))
    now[0] += 3599
    assert asyncio.run(store.get("resp_1", who)) is not None
    now[0] += 2
    assert asyncio.run(store.get("resp_1", who)) is None


@needs_models
def test_the_bundled_model_calls_a_forced_function(model_strata: StrataProcess) -> None:
    oai = model_strata.client().with_options(timeout=120)
    r = oai.responses.create(model="smollm2", input="What is the weather in Paris?", tools=[WEATHER],
                             tool_choice="required", max_output_tokens=60)
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls and calls[0].name == "weather_in" and calls[0].call_id
    assert isinstance(json.loads(calls[0].arguments), dict)
