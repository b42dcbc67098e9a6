"""The zero-config default end to end: ``strata up`` with the bundled SmolLM2 and MiniLM, via the openai SDK."""

from __future__ import annotations

import asyncio
import math
import uuid

import httpx
import openai
import pytest

from tests.servers import ADMIN_KEY, StrataProcess, wait_for

HELLO = [{"role": "user", "content": "Say hello to the world."}]


@pytest.fixture
def client(model_strata: StrataProcess) -> openai.OpenAI:
    return model_strata.client().with_options(timeout=60)


def test_chat_answers_with_usage_and_a_request_id(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=HELLO, max_tokens=16)
    assert raw.headers["x-request-id"].startswith("req_")
    reply = raw.parse()
    assert reply.model == "smollm2"
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 16

    raw = client.chat.completions.with_raw_response.create(model="smollm2", messages=HELLO, max_tokens=2,
                                                           extra_headers={"X-Request-Id": "trace-e2e-1"})
    assert raw.headers["x-request-id"] == "trace-e2e-1"


def test_chat_stream_sends_deltas_and_usage_only_when_asked(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=16, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 3 and "".join(deltas).strip()
    assert {c.model for c in chunks} == {"smollm2"}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.prompt_tokens > 0 and len(deltas) <= last.usage.completion_tokens <= 16
    assert all(c.usage is None for c in chunks[:-1])

    chunks = list(client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert all(c.usage is None for c in chunks)


def test_completions_json_and_stream(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=12)
    assert reply.model == "smollm2"
    assert reply.choices[0].text.strip()
    assert reply.usage is not None and reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0

    chunks = list(client.completions.create(model="smollm2", prompt="Once upon a time", max_tokens=12, stream=True))
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(texts) >= 3 and "".join(texts).strip()
    assert {c.model for c in chunks} == {"smollm2"}


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_place_paraphrases_closer_than_unrelated_text(client: openai.OpenAI) -> None:
    one = client.embeddings.create(model="minilm", input="The cat sits on the mat")
    assert one.model == "minilm" and len(one.data) == 1 and len(one.data[0].embedding) == 384
    assert one.usage.prompt_tokens > 0

    texts = ["The cat sits on the mat", "A cat is sitting on a rug", "Quarterly revenue grew by 8 percent"]
    many = client.embeddings.create(model="minilm", input=texts)
    assert [d.index for d in many.data] == [0, 1, 2]
    cat, paraphrase, revenue = (d.embedding for d in many.data)
    assert _cosine(cat, one.data[0].embedding) == pytest.approx(1.0, abs=1e-4)
    assert _cosine(cat, paraphrase) > _cosine(cat, revenue) + 0.2


def test_models_lists_both_bundled_routes(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} >= {"smollm2", "minilm"}


def test_client_disconnect_mid_stream_is_ledgered_499_and_frees_the_slot(model_strata: StrataProcess) -> None:
    # A long answer (ignore_eos: it cannot stop early) that would hold its slot for >10 s if not cancelled.
    body = {"model": "smollm2", "messages": HELLO, "max_tokens": 960, "stream": True, "ignore_eos": True}
    rid = f"disconnect-{uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "X-Request-Id": rid}
    with httpx.Client(timeout=30) as http, http.stream("POST", model_strata.url + "/v1/chat/completions",
                                                        json=body, headers=headers) as r:
        assert r.status_code == 200
        events = (line for line in r.iter_lines() if line.startswith("data: {"))
        for n, _ in enumerate(events):
            if n % 5 == 0 and _busy_slots(model_strata) >= 1:
                break
            assert n < 800, "the engine never reported a busy slot while streaming"
    # Well before the abandoned 960-token answer could finish on its own.
    wait_for(lambda: _busy_slots(model_strata) == 0, 6, "the engine slot to be freed after the disconnect")
    row = wait_for(lambda: [r for r in model_strata.ledger() if r["request_id"] == rid], 10, "the ledger row")[0]
    assert (row["status"], row["error_type"], row["route"], row["stream"]) == (499, "client_disconnected",
                                                                               "smollm2", True)


def _busy_slots(proc: StrataProcess) -> float:
    value = proc.metric("strata_engine_busy_slots", deployment="smollm2-local")
    assert value is not None
    return value



async def test_mixed_stream_and_json_requests_all_succeed(model_strata: StrataProcess) -> None:
    """llama.cpp closes its connection after each stream; a pooled connection must never fail the next call."""
    client = model_strata.async_client().with_options(timeout=120)

    async def user() -> None:
        for _ in range(4):
            stream = await client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=2, stream=True)
            assert [c async for c in stream]
            reply = await client.chat.completions.create(model="smollm2", messages=HELLO, max_tokens=2)
            assert reply.choices[0].message.content is not None

    await asyncio.gather(*(user() for _ in range(8)))


def test_shared_prompt_prefix_is_reused_and_reported(client: openai.OpenAI, model_strata: StrataProcess) -> None:
    """llama.cpp keeps the prompt cache per slot: a second request sharing a long system prompt reuses it,
    and the answer reports the cached tokens like OpenAI's ``prompt_tokens_details`` (also in /metrics)."""
    system = {"role": "system", "content": "You answer questions about the ACME company " + uuid.uuid4().hex
              + ": its products, its history and its people, politely and briefly. " * 3}
    first = client.chat.completions.create(model="smollm2", max_tokens=2, temperature=0,
                                           messages=[system, {"role": "user", "content": "Hi."}])
    second = client.chat.completions.create(model="smollm2", max_tokens=2, temperature=0,
                                            messages=[system, {"role": "user", "content": "Hello."}])
    assert first.usage and second.usage and second.usage.prompt_tokens_details
    cached = second.usage.prompt_tokens_details.cached_tokens or 0
    assert cached >= second.usage.prompt_tokens // 2, second.usage  # the shared system prompt at least
    metrics = httpx.get(model_strata.url + "/metrics").text
    assert "strata_cached_prompt_tokens_total" in metrics
