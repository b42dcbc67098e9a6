"""The semantic cache as clients see it: a question that means the same gets the cached answer; one that
differs by a negation, a number or a named entity never does, nor one from another team, another system
prompt or other sampling parameters.

Embeddings come from a real embeddings route; here the fault-injecting upstream's (letter counts: near
identical texts are very similar, so the guards are what keeps the hard negatives out). The real MiniLM
is measured in bench/semantic_cache.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from strata.gateway.semantic import facts
from tests.test_traffic import dep, gateway, metric, route
from tests.upstreams import FaultyUpstream


@pytest.fixture
def up() -> Any:
    with FaultyUpstream("sem") as server:
        yield server


def routes(up: FaultyUpstream, similarity: float = 0.95, **cache: Any) -> list[dict[str, Any]]:
    chat = route(dep("d", up, model="ok"),
                 cache={"exact": True, "semantic": True, "similarity": similarity, "embeddings_route": "emb", **cache})
    emb = {"name": "emb", "deployments": [dep("emb-d", up, model="emb")]}
    return [chat, emb]


async def ask(client: httpx.AsyncClient, question: str, system: str | None = None,
              headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": question}]
    r = await client.post("/v1/chat/completions", json={"model": "m", "messages": messages, "temperature": 0, **body},
                          headers=headers or {})
    assert r.status_code == 200, r.text
    return r


async def test_a_paraphrase_is_served_from_the_cache(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, *routes(up)) as client:
        first = await ask(client, "What is the capital of France?")
        hits = up.hits
        again = await ask(client, "what is the capital of France")
        assert again.headers["x-strata-cache"] == "hit"
        assert 0.95 <= float(again.headers["x-strata-cache-similarity"]) <= 1.0
        assert again.json()["choices"] == first.json()["choices"]
        assert up.hits == hits  # the model was not asked again
        assert await metric(client, "strata_cache_requests_total", route="m", result="semantic_hit") == 1


@pytest.mark.parametrize("original, near_miss", [
    ("What is the capital of France?", "What is not the capital of France?"),  # negation
    ("Why does ice float on water?", "Why doesn't ice float on water?"),
    ("How many legs do 3 spiders have?", "How many legs do 4 spiders have?"),  # numbers
    ("How many legs do three spiders have?", "How many legs do two spiders have?"),
    ("What is the capital of France?", "What is the capital of Spain?"),  # entities
    ("Cheapest flight from Paris to London?", "Cheapest flight from London to Paris?"),  # swapped entities
])
async def test_hard_negatives_never_hit(up: FaultyUpstream, tmp_path: Path, original: str, near_miss: str) -> None:
    async with gateway(tmp_path, *routes(up, similarity=0.5)) as client:
        await ask(client, original)
        r = await ask(client, near_miss)
        assert r.headers["x-strata-cache"] == "miss", (original, near_miss)


async def test_never_across_teams_system_prompts_or_sampling(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, *routes(up)) as client:
        await ask(client, "What is the capital of France?", system="You are terse.")
        assert (await ask(client, "what is the capital of France", system="You are verbose.")
                ).headers["x-strata-cache"] == "miss"
        assert (await ask(client, "what is the capital of France", system="You are terse.", max_tokens=5)
                ).headers["x-strata-cache"] == "miss"
        key = (await client.post("/admin/keys", json={"name": "other", "team": "other"})).json()["key"]
        r = await ask(client, "what is the capital of France", system="You are terse.",
                      headers={"Authorization": f"Bearer {key}"})
        assert r.headers["x-strata-cache"] == "miss"
        assert (await ask(client, "what is the capital of France", system="You are terse.")
                ).headers["x-strata-cache"] == "hit"


async def test_semantic_cache_keeps_serving_when_embeddings_fail(up: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, *routes(up)) as client:
        await ask(client, "What is the capital of France?")
        up.mode = "err500"  # the embeddings route (and the model) fail now...
        question = [{"role": "user", "content": "capital of France?"}]
        r = await client.post("/v1/chat/completions", json={"model": "m", "temperature": 0, "messages": question})
        assert r.status_code == 502  # ...the request fails as the model does, not because of the cache
        up.mode = None
        assert (await ask(client, "What is the capital of France?")).headers["x-strata-cache"] == "hit"  # exact


def test_the_guard_reads_negation_numbers_and_entities() -> None:
    assert facts("What isn't the capital of France?") == (True, (), ("france",))
    assert facts("How many legs do 3 spiders have?") == facts("how many legs do three spiders have")
    assert facts("Flights from Paris to London") != facts("Flights from London to Paris")
    assert facts("Tell me the capital city of France.") == facts("What is the capital of France?")
