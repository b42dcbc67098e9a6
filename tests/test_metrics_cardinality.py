"""Label cardinality is bounded: 10,000 distinct end users, tags and metadata leave ``/metrics`` as many series
as a handful of requests did (a Prometheus server's memory grows with series, not with requests), and no user
id or tag value ever becomes a label value.

In-process tier (``httpx.ASGITransport``) so ten thousand requests take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.test_traffic import dep, gateway, route
from tests.upstreams import FaultyUpstream

USERS = 10_000
CONCURRENCY = 50


async def series(client: httpx.AsyncClient) -> tuple[int, set[str]]:
    """How many series ``/metrics`` exposes, and every label value among them. The control loops' own
    series are left out: each loop's first pass adds its step histogram, whenever that pass comes."""
    text = (await client.get("/metrics")).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples
               if not family.name.startswith("strata_loop_")]
    return len(samples), {v for s in samples for v in s.labels.values()}


async def request(client: httpx.AsyncClient, i: int) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": f"user-{i}",
            "metadata": {"session": f"session-{i}", "experiment": f"exp-{i % 977}"}}
    headers = {"X-Strata-Tags": f"customer=cust-{i},feature=f{i % 311}"}
    r = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text


async def test_ten_thousand_users_and_tags_add_no_series(upstream: FaultyUpstream, tmp_path: Path) -> None:
    quiet = {"tracing": {"enabled": False}, "ledger": {"flush_interval": 0.05, "journal": {"enabled": False}}}
    async with gateway(tmp_path, route(dep("d1", upstream, "ok")), **quiet) as client:
        for i in range(USERS, USERS + 20):  # warm: every series a request touches exists now
            await request(client, i)
        before, _ = await series(client)
        for start in range(0, USERS, CONCURRENCY):
            await asyncio.gather(*(request(client, i) for i in range(start, start + CONCURRENCY)))
        after, values = await series(client)
        served = sum(s.value for f in text_string_to_metric_families((await client.get("/metrics")).text)
                     for s in f.samples if s.name == "strata_requests_total")
    assert served >= USERS + 20  # every request was counted ...
    assert after == before  # ... in the same series
    leaked = {v for v in values if v.startswith(("user-", "session-", "exp-", "cust-"))}
    assert leaked == set()
