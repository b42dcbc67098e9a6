"""A broken stream continued on another deployment (a route's ``continue_streams``), as clients see it.

The primary is a ``FaultyUpstream`` in mode ``die`` (two chunks, then the connection drops); the fallback
continues a trailing assistant message with the rest of the fixed reply (mode ``continue``), so a spliced
stream that reads as one is exactly the fixed reply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.conftest import needs_models
from tests.servers import StrataProcess, ledger_rows
from tests.test_traffic import FAST_RETRY, HI, attempts_of, dep, eventually, gateway, route, sdk
from tests.upstreams import REPLY, FaultyUpstream


def continuing(ups: dict[str, FaultyUpstream], **cfg: Any) -> dict[str, Any]:
    return route(dep("main", ups["a"], "die"), dep("spare", ups["b"], "continue", role="fallback"),
                 retries=2, **FAST_RETRY, **cfg)


async def test_a_stream_that_dies_is_continued_on_the_fallback(ups: dict[str, FaultyUpstream],
                                                               tmp_path: Path) -> None:
    received: list[str] = []
    finals: list[Any] = []
    usage = None
    async with gateway(tmp_path, continuing(ups, continue_streams=True)) as client, sdk(client) as oai:
        stream = await oai.chat.completions.create(model="m", messages=HI, stream=True,
                                                   stream_options={"include_usage": True},
                                                   extra_headers={"X-Request-Id": "continued"})
        ids = set()
        async for chunk in stream:
            ids.add(chunk.id)
            assert chunk.model == "m"
            if chunk.choices and chunk.choices[0].delta.content:
                assert chunk.choices[0].index == 0
                received.append(chunk.choices[0].delta.content)
            if chunk.choices and chunk.choices[0].finish_reason:
                finals.append(chunk)
            if chunk.usage:
                usage = chunk.usage
    assert "".join(received) == REPLY, "the prefix from the broken stream, then its continuation"
    assert len(ids) == 1, "one stream id across both attempts"
    assert finals[0].choices[0].finish_reason == "stop"
    assert (finals[0].model_extra or {})["strata"] == {"continued": True, "from": "main", "to": "spare",
                                                       "after_chars": len("Hello from")}
    assert usage is not None
    # the broken attempt: its prompt estimated and its two tokens; the continuation: 7 + the three words left
    assert usage.completion_tokens == 2 + 3
    assert usage.prompt_tokens > 7 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    last = ups["b"].last_body
    assert last is not None and last["messages"][-1] == {"role": "assistant", "content": "Hello from"}
    assert last["messages"][:-1] == HI
    assert await attempts_of(tmp_path, "continued") == [("main", "bad_gateway", 502), ("spare", "ok", 200)]
    row = next(r for r in ledger_rows(tmp_path) if r["request_id"] == "continued")
    assert row["status"] == 200 and row["deployment"] == "spare"
    assert row["attempts"][0]["broken_after_chars"] == len("Hello from")
    assert row["attempts"][1]["continues"] == {"from": "main", "after_chars": len("Hello from")}
    assert row["completion_tokens"] == usage.completion_tokens


async def test_the_stream_says_it_was_continued(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    async with gateway(tmp_path, continuing(ups, continue_streams=True)) as client:
        async with client.stream("POST", "/v1/chat/completions",
                                 json={"model": "m", "messages": HI, "stream": True}) as r:
            raw = (await r.aread()).decode()
    assert r.status_code == 200
    assert ": strata-continued from=main to=spare after=10 chars\n\n" in raw
    assert raw.index("strata-continued") < raw.index("the")  # between the prefix and the continuation
    assert raw.endswith("data: [DONE]\n\n")


async def test_a_text_completion_is_continued_from_prompt_and_text(ups: dict[str, FaultyUpstream],
                                                                   tmp_path: Path) -> None:
    async with gateway(tmp_path, continuing(ups, continue_streams=True)) as client, sdk(client) as oai:
        stream = await oai.completions.create(model="m", prompt="Say hi: ", stream=True)
        text = "".join([c.choices[0].text async for c in stream if c.choices])
    assert text == REPLY
    assert ups["b"].last_body is not None and ups["b"].last_body["prompt"] == "Say hi: Hello from"


async def test_without_a_deployment_to_continue_on_the_stream_ends_with_the_error(
        ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["b"].mode = "err500"
    received: list[str] = []
    async with gateway(tmp_path, continuing(ups, continue_streams=True)) as client, sdk(client) as oai:
        with pytest.raises(openai.APIError) as info:
            stream = await oai.chat.completions.create(model="m", messages=HI, stream=True,
                                                       extra_headers={"X-Request-Id": "not-continued"})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    assert (info.value.type, info.value.code) == ("upstream_error", "bad_gateway")
    assert "".join(received) == "Hello from", "never a silently truncated 200"
    attempts = await attempts_of(tmp_path, "not-continued")
    assert attempts[0] == ("main", "bad_gateway", 502) and attempts[-1] == ("spare", "bad_gateway", 502)
    row = await eventually(lambda: next((r for r in ledger_rows(tmp_path) if r["request_id"] == "not-continued"),
                                        None), "the ledger row")
    assert row["status"] == 502


async def test_without_the_option_a_dying_stream_is_not_continued(ups: dict[str, FaultyUpstream],
                                                                  tmp_path: Path) -> None:
    async with gateway(tmp_path, continuing(ups)) as client:
        async with client.stream("POST", "/v1/chat/completions",
                                 json={"model": "m", "messages": HI, "stream": True}) as r:
            raw = (await r.aread()).decode()
    assert "strata-continued" not in raw and '"bad_gateway"' in raw
    assert ups["b"].hits == 0


@needs_models
def test_the_bundled_model_continues_a_broken_stream(upstream: FaultyUpstream, tmp_path: Path) -> None:
    """llama.cpp (xllamacpp) prefills the trailing assistant message: the continuation goes on from the prefix
    the broken upstream sent, it does not start a new answer."""
    local = {"type": "llamacpp", "model": "bundled:smollm2", "n_parallel": 1, "n_ctx": 1024, "threads": 2}
    config = {"routes": [{"name": "m", "continue_streams": True, "deployments": [
        {"name": "main", "engine": {"type": "openai", "base_url": upstream.base_url, "model": "die"}},
        {"name": "local", "role": "fallback", "engine": local}]}]}
    proc = StrataProcess(tmp_path, config).start(ready_timeout=300)
    try:
        stream = proc.client(timeout=120).chat.completions.create(
            model="m", stream=True, temperature=0, max_tokens=24,
            messages=[{"role": "user", "content": 'Repeat exactly: "Hello from the other side of the world."'}])
        chunks = list(stream)
    finally:
        proc.stop()
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.startswith("Hello from") and len(text) > len("Hello from"), text
    assert not text[len("Hello from"):].lstrip(' "').startswith("Hello"), f"a new answer, not a continuation: {text}"
    assert (finals[-1].model_extra or {})["strata"]["to"] == "local"
