"""Abuse limits beyond rate limits, as clients see them: a key's concurrency cap (released on every path,
the client leaving included), a route's prompt size limits, and the per-IP lockout after repeated bad keys.

In-process gateway (``tests.test_traffic.gateway``) with a real upstream; the disconnect test runs a real
``strata up`` so the client really closes its TCP connection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.servers import StrataProcess, openai_route, wait_for
from tests.test_traffic import dep, error_code, eventually, gateway, route, sdk
from tests.upstreams import FaultyUpstream


@pytest.fixture(scope="module")
def up() -> Any:
    with FaultyUpstream("abuse") as u:
        yield u


def hi(key: str | None = None, model: str = "m", headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments of a chat request (``key``: instead of the client's admin key)."""
    out: dict[str, Any] = {"json": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
                           "headers": dict(headers or {})}
    if key is not None:
        out["headers"]["Authorization"] = f"Bearer {key}"
    return out


async def capped_key(client: httpx.AsyncClient, cap: int) -> str:
    r = await client.post("/admin/keys", json={"name": "capped", "max_concurrency": cap})
    assert r.status_code == 200, r.text
    assert r.json()["max_concurrency"] == cap
    key: str = r.json()["key"]
    return key


# --- concurrency cap -------------------------------------------------------------------------------------


async def test_requests_beyond_a_keys_concurrency_cap_get_429_and_the_slots_come_back(
        up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("a", up, "slow"))) as client:
        key = await capped_key(client, 2)
        replies = await asyncio.gather(*(client.post("/v1/chat/completions", **hi(key)) for _ in range(5)))
        codes = sorted(r.status_code for r in replies)
        assert codes == [200, 200, 429, 429, 429], [r.text for r in replies]
        refused = next(r for r in replies if r.status_code == 429)
        assert error_code(refused) == "concurrency_limit" and "max_concurrency 2" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        again = await asyncio.gather(*(client.post("/v1/chat/completions", **hi(key)) for _ in range(2)))
        assert [r.status_code for r in again] == [200, 200]  # every slot came back
        streams = await asyncio.gather(*(client.post("/v1/chat/completions", json={**hi(key)["json"], "stream": True},
                                                     headers=hi(key)["headers"]) for _ in range(2)))
        assert [r.status_code for r in streams] == [200, 200]
        assert (await client.post("/v1/chat/completions", **hi())).status_code == 200  # other keys: no cap


async def test_a_refused_request_gives_its_slot_back(up: FaultyUpstream, tmp_path: Path) -> None:
    """A request that takes a slot and is then refused (here by the upstream's 400) frees it."""
    async with gateway(tmp_path, route(dep("a", up, "err400"))) as client:
        key = await capped_key(client, 1)
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", **hi(key))).status_code == 400


def test_the_slot_comes_back_when_the_client_disconnects(up: FaultyUpstream, tmp_path: Path) -> None:
    routes = [openai_route("stall", up.base_url, "stall"), openai_route("slowfirst", up.base_url, "slow-first"),
              openai_route("fast", up.base_url, "whoami")]
    proc = StrataProcess(tmp_path, {"routes": routes}).start(require_ready=False)
    try:
        r = proc.admin("POST", "/admin/keys", json={"name": "capped", "max_concurrency": 1})
        key = r.json()["key"]
        for model, stream in (("stall", False), ("slowfirst", True)):
            body = {**hi(model=model)["json"], "stream": stream}
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes its connection
                with httpx.stream("POST", proc.url + "/v1/chat/completions", json=body, timeout=1.5,
                                  headers={"Authorization": f"Bearer {key}"}) as held:
                    held.read()

            def served() -> bool:
                r = httpx.post(proc.url + "/v1/chat/completions", **hi(key, "fast"), timeout=10)
                assert r.status_code in (200, 429), r.text
                return r.status_code == 200

            wait_for(served, 10, f"the slot held by the {model} request to come back")
    finally:
        proc.stop()


# --- prompt size -----------------------------------------------------------------------------------------


async def test_a_prompt_over_the_routes_limits_is_400_naming_the_setting(up: FaultyUpstream, tmp_path: Path) -> None:
    chars = route(dep("a", up, "ok"), name="chars", max_input_chars=40)
    tokens = route(dep("b", up, "ok"), name="tokens", max_prompt_tokens=20)
    async with gateway(tmp_path, chars, tokens) as client, sdk(client) as oai:
        hits = up.hits
        with pytest.raises(openai.BadRequestError) as too_long:
            await oai.chat.completions.create(model="chars", messages=[{"role": "user", "content": "x" * 41}])
        assert too_long.value.code == "input_too_large" and too_long.value.param == "messages"
        assert "max_input_chars" in too_long.value.message and "41 characters" in too_long.value.message
        with pytest.raises(openai.BadRequestError) as too_many:
            await oai.chat.completions.create(model="tokens", messages=[{"role": "user", "content": "word " * 40}])
        assert too_many.value.code == "prompt_too_large" and "max_prompt_tokens" in too_many.value.message
        with pytest.raises(openai.BadRequestError) as text:
            await oai.completions.create(model="chars", prompt=["y" * 30, "z" * 30])
        assert text.value.param == "prompt"
        assert up.hits == hits  # refused before any engine call
        ok = await oai.chat.completions.create(model="chars", messages=[{"role": "user", "content": "short"}])
        assert ok.choices[0].message.content


def test_a_bad_prompt_limit_stops_startup_naming_the_field(tmp_path: Path) -> None:
    bad = openai_route("m", "http://127.0.0.1:9/v1", "x")
    bad["max_input_chars"] = 0
    with pytest.raises(RuntimeError, match="max_input_chars"):
        StrataProcess(tmp_path, {"routes": [bad]}).start(ready_timeout=60, require_ready=False)


# --- key guessing ----------------------------------------------------------------------------------------

ATTACKER = {"X-Forwarded-For": "203.0.113.9"}
LOCKOUT = {"auth_failures": 3, "auth_window": 60, "auth_lockout": 300}


async def guess(client: httpx.AsyncClient, n: int, headers: dict[str, str] | None = None) -> list[int]:
    codes = []
    for i in range(n):
        r = await client.post("/v1/chat/completions", **hi(f"sk-strata-guess-{i}", headers=headers))
        codes.append(r.status_code)
    return codes


async def test_an_ip_guessing_keys_is_locked_out_even_with_a_valid_key(up: FaultyUpstream, tmp_path: Path) -> None:
    abuse = {**LOCKOUT, "trusted_proxies": ["127.0.0.1"]}  # the in-process client's address stands for a proxy
    async with gateway(tmp_path, route(dep("a", up, "ok")), abuse=abuse) as client:
        valid = await capped_key(client, 100)
        assert await guess(client, 3, ATTACKER) == [401, 401, 401]
        locked = await client.post("/v1/chat/completions", **hi(valid, headers=ATTACKER))
        assert locked.status_code == 429 and error_code(locked) == "too_many_auth_failures", locked.text
        assert 290 <= int(locked.headers["retry-after"]) <= 300
        admin = await client.get("/admin/keys", headers=ATTACKER)
        assert admin.status_code == 429  # the admin API too
        assert (await client.post("/v1/chat/completions", **hi(valid))).status_code == 200  # other IPs: served
        other = hi(valid, headers={"X-Forwarded-For": "198.51.100.7"})
        assert (await client.post("/v1/chat/completions", **other)).status_code == 200

        async def lockout_event() -> Any:
            data = (await client.get("/admin/events", params={"kind": "auth_lockout"})).json()["data"]
            return next((e for e in data if e["subject"] == "203.0.113.9"), None)

        event = await eventually(lockout_event, "the auth_lockout event")
        assert "3 failed authentications" in event["message"]
        entries = (await client.get("/admin/audit", params={"action": "auth.lockout"})).json()["data"]
        assert [(e["actor"], e["subject"]) for e in entries] == [("gateway", "203.0.113.9")]


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(up: FaultyUpstream,
                                                                           tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("a", up, "ok")), abuse=LOCKOUT) as client:
        for i in range(3):  # a new made-up address each time: all count against the real peer
            await client.post("/v1/chat/completions", **hi("sk-wrong", headers={"X-Forwarded-For": f"10.0.0.{i}"}))
        locked = await client.post("/v1/chat/completions", **hi())
        assert locked.status_code == 429 and error_code(locked) == "too_many_auth_failures"


async def test_the_lockout_ends(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("a", up, "ok")), abuse={**LOCKOUT, "auth_lockout": 0.5}) as client:
        assert await guess(client, 3) == [401, 401, 401]
        assert (await client.post("/v1/chat/completions", **hi())).status_code == 429
        await eventually(lambda: _served(client), "the lockout to end")


async def _served(client: httpx.AsyncClient) -> bool:
    return (await client.post("/v1/chat/completions", **hi())).status_code == 200
