"""The exact cache as clients see it: identical requests answered from the cache, streamed or not,
never across teams (or keys), never for sampled requests unless asked, bypassable, bounded; hits are
recorded in the ledger with what they saved."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.servers import ledger_rows
from tests.test_traffic import FAST_RETRY, dep, eventually, gateway, metric, route, sdk
from tests.upstreams import FaultyUpstream

PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
Q: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def up() -> Any:
    with FaultyUpstream("cached") as server:
        yield server


def cached_route(up: FaultyUpstream, model: str = "ok", **cache: Any) -> dict[str, Any]:
    return route(dep("d", up, model=model, price=PRICE), cache={"exact": True, **cache}, **FAST_RETRY)


async def ask(client: httpx.AsyncClient, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": Q, "temperature": 0, **body},
                          headers=headers or {})
    assert r.status_code == 200, r.text
    return r


async def test_identical_request_is_served_from_cache_fast_and_free(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, cached_route(up, model="slow")) as client:
        t0 = time.perf_counter()
        first = await ask(client)
        miss_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = await ask(client)
        hit_s = time.perf_counter() - t0
        assert (first.headers["x-strata-cache"], second.headers["x-strata-cache"]) == ("miss", "hit")
        assert second.json()["choices"] == first.json()["choices"]
        assert second.json()["id"] != first.json()["id"]
        assert up.hits == 1
        assert hit_s < miss_s / 5  # the upstream takes 0.3 s; a hit does not wait for it
        rows = await eventually(lambda: len(ledger_rows(tmp_path)) == 2 and ledger_rows(tmp_path), "two ledger rows")
        served, hit = sorted(rows, key=lambda r: r["id"])
        assert served["cost_usd"] > 0 and served["role"] == "primary"
        assert (hit["role"], hit["cost_usd"], hit["saved_usd"]) == ("cache", 0.0, pytest.approx(served["cost_usd"]))
        assert await metric(client, "strata_cache_requests_total", route="m", result="hit") == 1


async def test_stream_and_non_stream_share_the_cache(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, cached_route(up)) as client, sdk(client) as oai:
        streamed = await oai.chat.completions.create(model="m", messages=Q, temperature=0, stream=True,
                                                     stream_options={"include_usage": True})
        text = "".join([c.choices[0].delta.content or "" async for c in streamed if c.choices])
        plain = await oai.chat.completions.create(model="m", messages=Q, temperature=0)
        assert plain.choices[0].message.content == text and text
        again = await oai.chat.completions.create(model="m", messages=Q, temperature=0, stream=True,
                                                  stream_options={"include_usage": True})
        chunks = [c async for c in again]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
        assert up.hits == 1


async def test_never_served_across_teams(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, cached_route(up)) as client:
        keys = []
        for team in ("red", "blue"):
            r = await client.post("/admin/keys", json={"name": team, "team": team})
            keys.append(r.json()["key"])
        for key in keys:
            r = await ask(client, {"Authorization": f"Bearer {key}"})
            assert r.headers["x-strata-cache"] == "miss"
        assert up.hits == 2
        r = await ask(client, {"Authorization": f"Bearer {keys[0]}"})
        assert r.headers["x-strata-cache"] == "hit" and up.hits == 2


async def test_key_namespace_separates_keys_of_one_team(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, cached_route(up, namespace="key")) as client:
        keys = [(await client.post("/admin/keys", json={"name": n, "team": "same"})).json()["key"] for n in "ab"]
        for key in keys:
            assert (await ask(client, {"Authorization": f"Bearer {key}"})).headers["x-strata-cache"] == "miss"
        assert up.hits == 2


async def test_sampled_requests_and_bypass_skip_the_cache(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, cached_route(up)) as client:
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json={"model": "m", "messages": Q, "temperature": 0.8})
            assert r.status_code == 200 and "x-strata-cache" not in r.headers
        assert up.hits == 2
        await ask(client, seed=7, temperature=0.8)
        assert (await ask(client, seed=7, temperature=0.8)).headers["x-strata-cache"] == "hit"  # a seed is enough
        await ask(client)
        r = await ask(client, {"X-Strata-Cache": "bypass"})
        assert "x-strata-cache" not in r.headers and up.hits == 5
        different = await ask(client, max_tokens=5)  # other sampling parameters: another entry
        assert different.headers["x-strata-cache"] == "miss"


async def test_ttl_and_size_bound(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, cached_route(up, ttl=0.3, max_entries=2)) as client:
        await ask(client)
        assert (await ask(client)).headers["x-strata-cache"] == "hit"
        time.sleep(0.35)
        assert (await ask(client)).headers["x-strata-cache"] == "miss"  # expired
        for n in range(3):  # three new entries: the oldest goes
            await ask(client, max_tokens=10 + n)
        assert (await ask(client, max_tokens=12)).headers["x-strata-cache"] == "hit"
        assert (await ask(client, max_tokens=10)).headers["x-strata-cache"] == "miss"


async def test_failed_answers_are_not_cached(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, cached_route(up)) as client:
        up.mode = "err500"
        r = await client.post("/v1/chat/completions", json={"model": "m", "messages": Q, "temperature": 0})
        assert r.status_code == 502
        up.mode = None
        assert (await ask(client)).headers["x-strata-cache"] == "miss"


async def test_routes_without_cache_never_cache(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("d", up, model="ok"))) as client:
        for _ in range(2):
            assert "x-strata-cache" not in (await ask(client)).headers
        assert up.hits == 2
        with pytest.raises(openai.NotFoundError):
            async with sdk(client) as oai:
                await oai.chat.completions.create(model="nope", messages=Q)


async def test_replicas_sharing_redis_share_the_cache(up: FaultyUpstream, tmp_path: Path) -> None:
    """With ``state.backend: redis`` an answer made through one replica is a hit on another, for its TTL."""
    import redis

    from tests.test_governance import redis_reachable

    if not redis_reachable("redis://127.0.0.1:6379/0"):
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    prefix = f"cache-{uuid.uuid4().hex[:8]}"
    state = {"backend": "redis", "key_prefix": prefix}
    shared = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    async with gateway(tmp_path / "a", cached_route(up, ttl=0.5), state=state) as one, \
            gateway(tmp_path / "b", cached_route(up, ttl=0.5), state=state) as two:
        first = await ask(one)
        assert first.headers["x-strata-cache"] == "miss" and up.hits == 1
        await eventually(lambda: shared.keys(f"{prefix}:cache:*"), "the shared entry in Redis")
        r = await ask(two)
        assert r.headers["x-strata-cache"] == "hit" and r.json()["choices"] == first.json()["choices"]
        assert up.hits == 1  # the second replica never asked the model
        time.sleep(0.6)  # past the TTL the first replica gave it: gone here and in Redis
        assert (await ask(two)).headers["x-strata-cache"] == "miss"
        assert up.hits == 2
    shared.close()
