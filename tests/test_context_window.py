"""Context window management as clients see it: a long conversation is cut (or summarised) to fit, the
system prompt and the newest turns always survive, the header says what was dropped, and a request that
cannot fit gets a clear 400 instead of an engine error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.servers import ledger_rows
from tests.test_traffic import dep, eventually, gateway, route
from tests.upstreams import FaultyUpstream

SYSTEM = {"role": "system", "content": "You are a helpful assistant for ACME."}


@pytest.fixture
def up() -> Any:
    with FaultyUpstream("ctx") as server:
        yield server


def conversation(turns: int, size: int = 200) -> list[dict[str, Any]]:
    msgs = [SYSTEM]
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        msgs.append({"role": role, "content": f"turn {i}: " + "x" * size})
    msgs.append({"role": "user", "content": "And the final question?"})
    return msgs


def window_route(up: FaultyUpstream, **context: Any) -> dict[str, Any]:
    return route(dep("d", up, model="echo", engine={"context_length": 1024}), context=context)


async def send(client: httpx.AsyncClient, messages: list[dict[str, Any]], **body: Any) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={"model": "m", "messages": messages, **body})


def received(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    got: list[dict[str, Any]] = json.loads(r.json()["choices"][0]["message"]["content"])
    return got


async def test_truncate_keeps_system_prompt_and_newest_turns(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, window_route(up, policy="truncate", max_prompt_tokens=300, keep_last=20)) as client:
        msgs = conversation(30)
        r = await send(client, msgs, max_tokens=50)
        got = received(r)
        assert got[0] == SYSTEM
        assert got[-1] == msgs[-1]
        assert got[1:] == msgs[len(msgs) - len(got) + 1:]  # a contiguous run of the newest turns
        chars = sum(len(m["content"]) for m in got)
        assert chars // 4 + 4 * len(got) + 3 <= 300
        dropped = int(r.headers["x-strata-context"].split(";")[0].removeprefix("dropped="))
        assert dropped == len(msgs) - len(got) > 0


async def test_short_conversations_pass_untouched(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, window_route(up, policy="truncate")) as client:
        msgs = conversation(2, size=20)
        r = await send(client, msgs)
        assert received(r) == msgs and "x-strata-context" not in r.headers


async def test_default_budget_is_the_window_minus_the_output_limit(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, window_route(up, policy="truncate", keep_last=100)) as client:
        msgs = conversation(40, size=300)  # far beyond 1024 tokens
        got = received(await send(client, msgs, max_tokens=600))
        chars = sum(len(m["content"]) for m in got)
        assert chars // 4 + 4 * len(got) + 3 <= 1024 - 600
        assert got[0] == SYSTEM and got[-1] == msgs[-1]


async def test_too_long_even_alone_is_a_clear_400(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, window_route(up, policy="truncate", max_prompt_tokens=100)) as client:
        r = await send(client, [SYSTEM, {"role": "user", "content": "y" * 2000}])
        assert r.status_code == 400
        err = r.json()["error"]
        assert (err["code"], err["param"]) == ("context_length_exceeded", "messages")
        assert "prompt budget is 100" in err["message"]
        assert up.hits == 0


async def test_summarize_replaces_dropped_turns_with_a_summary(up: FaultyUpstream, tmp_path: Path) -> None:
    summarizer = {"name": "summ", "deployments": [dep("summ-d", up, model="ok")]}
    ctx = {"policy": "summarize", "max_prompt_tokens": 300, "summarize_route": "summ"}
    async with gateway(tmp_path, window_route(up, **ctx), summarizer) as client:
        msgs = conversation(30)
        r = await send(client, msgs)
        got = received(r)
        assert got[0] == SYSTEM
        assert got[1]["role"] == "system" and got[1]["content"].startswith("Summary of the earlier conversation:")
        assert "Hello from the fixed upstream." in got[1]["content"]  # what the summarizer wrote
        assert "summarized=yes" in r.headers["x-strata-context"]
        rows = await eventually(lambda: len(ledger_rows(tmp_path)) >= 2 and ledger_rows(tmp_path), "ledger rows")
        roles = sorted(row["role"] for row in rows)
        assert roles == ["primary", "summary"]  # the summary is accounted for, under the same request id
        assert len({row["request_id"] for row in rows}) == 1


async def test_summary_failure_falls_back_to_truncation(up: FaultyUpstream, tmp_path: Path) -> None:
    summarizer = {"name": "summ", "deployments": [dep("summ-d", up, model="err500")]}
    ctx = {"policy": "summarize", "max_prompt_tokens": 300, "summarize_route": "summ"}
    async with gateway(tmp_path, window_route(up, **ctx), summarizer) as client:
        r = await send(client, conversation(30))
        got = received(r)
        assert not any(m["content"].startswith("Summary of") for m in got)
        assert "summarized=no" in r.headers["x-strata-context"]
