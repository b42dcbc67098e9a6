"""The bundled SmolLM2 through the official SDK: tool calls (required, named, streamed, a second turn with
the result), ``n > 1``, capability 400s, ``models.retrieve``, ``cmpl-`` ids, OpenAI fields only, and the
model's full context window per request."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import needs_models
from tests.servers import ADMIN_KEY, StrataProcess, wait_for

WEATHER: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TIME: Any = {"type": "function", "function": {
    "name": "get_time", "description": "Get the local time in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def client(model_strata: StrataProcess) -> openai.OpenAI:
    return model_strata.client().with_options(timeout=120)


def test_required_tool_call_then_a_second_turn_uses_the_result(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER, TIME],
                                           tool_choice="required", temperature=0, max_tokens=64)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls
    call: Any = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    result = json.dumps({"temperature_c": 17, "sky": "light rain"})
    follow_up: Any = [*ASK, choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": result}]
    answer = client.chat.completions.create(model="smollm2", messages=follow_up, tools=[WEATHER],
                                            temperature=0, max_tokens=48)
    text = answer.choices[0].message.content or ""
    assert answer.choices[0].message.tool_calls is None
    assert "17" in text or "rain" in text, text  # the answer is built on the tool's result


def test_named_tool_call_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Is it late in Tokyo now?"}], tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}}, temperature=0, max_tokens=64,
        stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    calls: list[Any] = [tc for d in deltas for tc in (d.tool_calls or [])]
    assert calls[0].id and calls[0].id.startswith("call_") and calls[0].function.name == "get_time"
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(arguments)["city"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_auto_lets_the_model_answer_in_prose(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Say hi."}],
                                           tools=[WEATHER], tool_choice="auto", temperature=0, max_tokens=16)
    choice = reply.choices[0]
    assert choice.message.content or choice.message.tool_calls


def test_n_returns_that_many_choices_with_usage_summed(client: openai.OpenAI, model_strata: StrataProcess) -> None:
    one = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=8, extra_body={"ignore_eos": True})
    raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=ASK, max_tokens=8, n=2,
                                                           extra_body={"ignore_eos": True})
    two = raw.parse()
    assert [c.index for c in two.choices] == [0, 1] and all(c.message.content for c in two.choices)
    assert one.usage and two.usage
    assert two.usage.completion_tokens == 16 and two.usage.prompt_tokens == 2 * one.usage.prompt_tokens
    rid = raw.headers["x-request-id"]
    row = wait_for(lambda: [r for r in model_strata.ledger() if r["request_id"] == rid], 10, "the ledger row")[0]
    assert row["completion_tokens"] == 16  # the ledger (and the cost) counts both samples

    chunks = list(client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=4, n=2, stream=True,
                                                 stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}))
    assert {c.choices[0].index for c in chunks if c.choices} == {0, 1}
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_capability_400s_never_take_the_route_down(client: openai.OpenAI) -> None:
    image: Any = [{"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]
    for _ in range(6):  # more than enough failures to eject a deployment, were they counted
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="smollm2", messages=image, max_tokens=4)
        assert _error(err.value)["param"] == "messages[0].content[1].image_url"
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="minilm", input="a cat", dimensions=128)
    assert _error(err.value)["param"] == "dimensions" and "384" in _error(err.value)["message"]
    assert len(client.embeddings.create(model="minilm", input="a cat", dimensions=384).data[0].embedding) == 384
    assert client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=4).choices[0].message.content



@pytest.mark.parametrize(("kwargs", "param"), [
    ({"echo": True, "logprobs": 1}, "echo"),  # how lm-eval-harness scores a prompt
    ({"suffix": " and they lived happily ever after."}, "suffix"),
    ({"best_of": 3}, "best_of"),
])
def test_completion_options_llamacpp_would_ignore_are_refused(client: openai.OpenAI, kwargs: Any,
                                                               param: str) -> None:
    """llama.cpp answers as if these were not set (no prompt echoed, no insertion, one sample)."""
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=4, **kwargs)
    assert _error(err.value)["param"] == param
    assert client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=4, best_of=2, n=2,
                                     extra_body={"echo": False, "suffix": ""}).choices


def test_audio_answers_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=4, modalities=["text", "audio"],
                                       audio={"voice": "alloy", "format": "wav"})
    assert _error(err.value)["param"] == "modalities"
    assert client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=4,
                                          modalities=["text"]).choices[0].message.content


def test_local_engines_report_what_their_models_can_do(model_strata: StrataProcess) -> None:
    view = model_strata.admin("GET", "/admin/engines").json()
    llm, embed = view["smollm2-local"]["capabilities"], view["minilm-local"]["capabilities"]
    assert (llm["tools"], llm["vision"], llm["max_n"], llm["endpoints"]) == (True, False, 8, ["chat", "completion"])
    assert (embed["embedding_size"], embed["dimensions"], embed["endpoints"]) == (384, False, ["embeddings"])


def _error(exc: openai.APIStatusError) -> Any:
    return exc.body


def test_models_retrieve(client: openai.OpenAI) -> None:
    assert client.models.retrieve("smollm2").id == "smollm2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_answers_carry_openai_fields_only(model_strata: StrataProcess) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body: dict[str, Any] = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": 4}
    with httpx.Client(base_url=model_strata.url, headers=headers, timeout=60) as http:
        r = http.post("/v1/completions", json=body)
        assert r.status_code == 200
        reply = r.json()
        assert reply["id"].startswith("cmpl-") and reply["object"] == "text_completion"
        assert set(reply) <= {"id", "object", "created", "model", "choices", "usage", "system_fingerprint"}
        assert float(r.headers["x-strata-engine-ms"]) > 0  # llama.cpp's own timings, as a header
        r = http.post("/v1/chat/completions", json={"model": "smollm2", "messages": ASK, "max_tokens": 4,
                                                    "stream": True, "stream_options": {"include_usage": True}})
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert events and all("timings" not in e for e in events)
    assert all(e["id"].startswith("chatcmpl-") for e in events)


def test_one_request_can_use_the_whole_context_window(client: openai.OpenAI) -> None:
    """8,192 tokens of KV cache, one pool for the 8 slots: a 1,500-token prompt (more than 8,192 / 8) fits."""
    long = " ".join(f"item{i}" for i in range(500))
    reply = client.chat.completions.create(model="smollm2", max_tokens=2,
                                           messages=[{"role": "user", "content": f"Count these: {long}"}])
    assert reply.usage is not None and reply.usage.prompt_tokens > 1024


@needs_models
def test_requests_that_together_overflow_the_shared_kv_cache_wait_instead_of_failing(tmp_path: Path) -> None:
    """Three ~750-token prompts at once on a 2,048-token unified cache: llama.cpp alone fails them all (500
    "Context size has been exceeded", measured); behind the engine's KV admission they queue and all answer."""
    engine = {"type": "llamacpp", "model": "bundled:smollm2", "n_parallel": 4, "n_ctx": 2048, "threads": 2}
    config = {"routes": [{"name": "tight", "deployments": [{"name": "tight-local", "engine": engine}]}]}
    proc = StrataProcess(tmp_path, config).start(ready_timeout=300)
    try:
        client = proc.async_client().with_options(timeout=300)
        words = "the quick brown fox jumps over the lazy dog " * 80

        async def ask(i: int) -> int:
            reply = await client.chat.completions.create(
                model="tight", max_tokens=8, messages=[{"role": "user", "content": f"{i}: repeat {words}"}])
            assert reply.usage is not None
            return reply.usage.prompt_tokens

        async def all_three() -> list[int]:
            return await asyncio.gather(*(ask(i) for i in range(3)))

        prompts = asyncio.run(all_three())
        assert sum(prompts) > 2048  # together they could never have fitted at once
    finally:
        proc.stop()
