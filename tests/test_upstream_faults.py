"""Third-party failures as a client sees them through the real gateway and the official SDK.

The routes point at the fault-injecting upstream (``tests/upstreams.py``); ``stall`` routes have a 1 s
read timeout. A hang would surface as the SDK's own timeout, which these tests treat as a failure.
"""

from __future__ import annotations

import uuid

import openai
import pytest

from tests.servers import StrataProcess, wait_for
from tests.upstreams import REPLY

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def client(fault_strata: StrataProcess) -> openai.OpenAI:
    return fault_strata.client().with_options(timeout=20)


@pytest.mark.parametrize(("model", "status", "code", "stream"), [
    ("err500", 502, "bad_gateway", False),
    ("err500", 502, "bad_gateway", True),
    ("stall", 504, "upstream_timeout", False),
    ("stall", 504, "upstream_timeout", True),
    ("die", 502, "bad_gateway", False),
    ("down", 503, "engine_unavailable", False),
    ("down", 503, "engine_unavailable", True),
])
def test_upstream_failure_is_a_5xx_upstream_error(fault_strata: StrataProcess, client: openai.OpenAI, model: str,
                                                  status: int, code: str, stream: bool) -> None:
    rid = f"fault-{model}-{uuid.uuid4().hex[:8]}"
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=model, messages=HI, stream=stream, extra_headers={"X-Request-Id": rid})
    err = info.value
    assert (err.status_code, err.type, err.code) == (status, "upstream_error", code)
    assert err.response.headers["x-request-id"] == rid
    assert _ledgered(fault_strata, rid)["status"] == status


def test_upstream_500_message_reaches_the_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError, match="upstream exploded"):
        client.chat.completions.create(model="err500", messages=HI)


@pytest.mark.parametrize(("model", "received", "status", "code"), [
    ("die", "Hello from", 502, "bad_gateway"),
    ("stall-stream", "Hello", 504, "upstream_timeout"),
])
def test_stream_that_breaks_midway_ends_with_an_error_event(fault_strata: StrataProcess, client: openai.OpenAI,
                                                            model: str, received: str, status: int, code: str) -> None:
    rid = f"broken-{model}-{uuid.uuid4().hex[:8]}"
    content: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model=model, messages=HI, stream=True,
                                                    extra_headers={"X-Request-Id": rid}):
            if chunk.choices and chunk.choices[0].delta.content:
                content.append(chunk.choices[0].delta.content)
    err = info.value
    assert not isinstance(err, openai.APIConnectionError), f"the stream hung or was cut, not failed: {err!r}"
    assert (err.type, err.code) == ("upstream_error", code)
    assert "".join(content) == received
    row = _ledgered(fault_strata, rid)
    assert (row["status"], row["error_type"]) == (status, code)


def test_stream_cut_midway_still_ledgers_the_tokens_it_delivered(fault_strata: StrataProcess,
                                                                 client: openai.OpenAI) -> None:
    rid = f"partial-{uuid.uuid4().hex[:8]}"
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model="die", messages=HI, stream=True,
                                                extra_headers={"X-Request-Id": rid}):
            pass
    row = _ledgered(fault_strata, rid)
    assert row["completion_tokens"] >= 2, "two content chunks reached the client"
    assert row["cost_usd"] > 0


def test_upstream_gets_the_configured_key_not_the_clients(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="echo-auth", messages=HI)
    assert reply.choices[0].message.content == "Bearer sk-upstream-secret"


def test_stream_has_a_usage_chunk_only_when_asked(client: openai.OpenAI) -> None:
    plain = list(client.chat.completions.create(model="ok", messages=HI, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in plain if c.choices) == REPLY
    assert all(c.usage is None for c in plain)
    assert {c.model for c in plain} == {"ok"}

    counted = list(client.chat.completions.create(model="ok", messages=HI, stream=True,
                                                  stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in counted if c.choices) == REPLY
    last = counted[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (7, 5)
    assert all(c.usage is None for c in counted[:-1])


def _ledgered(proc: StrataProcess, request_id: str) -> dict:
    """The request's ledger row, once the batched writer has flushed it."""
    rows = wait_for(lambda: [r for r in proc.ledger() if r["request_id"] == request_id], 10, f"ledger row {request_id}")
    assert len(rows) == 1
    return rows[0]
