"""No single caller can take a route down for everyone (outlier detection, as clients and operators see it).

The upstream is a real ``FaultyUpstream``; requests whose messages contain ``POISON`` get its 500, like
input the bundled llama.cpp cannot process. Member keys are real keys made through the admin API.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from strata.config.settings import BreakerConfig
from strata.routing.outlier import CallerOutliers, Served
from tests.test_traffic import FAST_RETRY, attempts_of, dep, engines, eventually, gateway, route
from tests.upstreams import POISON, FaultyUpstream


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def member(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    r = await client.post("/admin/keys", json={"name": name, "team": name})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['key']}"}


async def ask(client: httpx.AsyncClient, headers: dict[str, str], text: str = "hi", rid: str | None = None
              ) -> httpx.Response:
    extra = {"X-Request-Id": rid} if rid else {}
    return await client.post("/v1/chat/completions", headers={**headers, **extra},
                             json={"model": "m", "messages": [{"role": "user", "content": text}]})


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


async def test_one_key_sending_failing_requests_cannot_take_the_only_model_down(
        ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """The reported outage: default breaker and retries, one deployment, a key whose requests the upstream 500s."""
    r = route(dep("only", ups["a"], "ok"), breaker={"cooldown": 1.0}, **FAST_RETRY)
    async with gateway(tmp_path, r) as client:
        alice, bob, mallory = [await member(client, n) for n in ("alice", "bob", "mallory")]
        for who in (alice, bob):
            assert (await ask(client, who)).status_code == 200, "before"

        async def attack() -> list[httpx.Response]:
            return [await ask(client, mallory, f"look {POISON}") for _ in range(8)]

        async def use(who: dict[str, str]) -> list[httpx.Response]:
            return [await ask(client, who) for _ in range(8)]

        bad, *others = await asyncio.gather(attack(), use(alice), use(bob))
        good = [g for replies in others for g in replies]
        assert [g.status_code for g in good] == [200] * 16, "everyone else is served during the attack"
        statuses = [b.status_code for b in bad]
        assert statuses.count(502) == 3 and statuses.count(429) == 5, statuses
        refused = next(b for b in bad if b.status_code == 429)
        assert refused.json()["error"]["code"] == "caller_failing"
        assert 1 <= int(refused.headers["retry-after"]) <= 2

        view = (await engines(client))["only"]
        assert (view["breaker"], view["ejections"], view["panic"]) == ("closed", 0, False)
        assert len(view["throttled_keys"]) == 1, view
        assert await metric(client, "strata_request_failures_total", route="m", attributed_to="request") == 3
        assert await metric(client, "strata_callers_throttled_total", route="m") == 1
        events = (await client.get("/admin/events", params={"kind": "caller_throttled"})).json()["data"]
        assert len(events) == 1 and "'m'" in events[0]["message"], events

        for who in (alice, bob):
            assert (await ask(client, who)).status_code == 200, "after"
        assert (await ask(client, mallory)).status_code == 429, "the slowed-down key waits out its cool-down"
        await eventually(lambda: _unthrottled(client), "mallory's cool-down to end", timeout=5)
        assert (await ask(client, mallory, POISON)).status_code == 502, "on probation: one more failure ..."
        again = await ask(client, mallory)
        assert again.status_code == 429 and int(again.headers["retry-after"]) == 2, "... doubles the cool-down"
        await eventually(lambda: _unthrottled(client), "mallory's second cool-down to end", timeout=5)
        assert (await ask(client, mallory)).status_code == 200, "then the key is served again"


async def _unthrottled(client: httpx.AsyncClient) -> bool:
    return not (await engines(client))["only"]["throttled_keys"]


async def test_a_request_failing_everywhere_counts_once_against_the_deployment(
        ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """Alone on the route (nobody else is served), a failing request is evidence, but one piece, not three."""
    r = route(dep("only", ups["a"], "ok"), retries=2, breaker={"consecutive_failures": 3}, **FAST_RETRY)
    async with gateway(tmp_path, r) as client:
        for i in range(2):
            assert (await ask(client, client.headers, POISON, rid=f"p{i}")).status_code == 502
        assert await attempts_of(tmp_path, "p1") == [("only", "bad_gateway", 502)] * 3
        assert (await engines(client))["only"]["breaker"] == "closed", "6 failed attempts, 2 failed requests"
        assert await metric(client, "strata_request_failures_total", route="m", attributed_to="deployment") == 2
        assert (await ask(client, client.headers, POISON)).status_code == 502
        assert (await engines(client))["only"]["breaker"] == "open"


async def test_a_route_whose_every_deployment_is_ejected_panics_and_keeps_serving(
        ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["a"].mode = "err500"
    r = route(dep("only", ups["a"]), retries=2, breaker={"consecutive_failures": 1, "cooldown": 60}, **FAST_RETRY)
    async with gateway(tmp_path, r, supervisor={"health_interval": 0.05}) as client:
        assert (await ask(client, client.headers)).status_code == 502
        view = (await engines(client))["only"]
        assert (view["breaker"], view["panic"]) == ("open", True)
        await eventually(lambda: _gauge_is(client, 1.0), "strata_route_panic to show the panic")
        hits = ups["a"].hits
        assert (await ask(client, client.headers, rid="panic")).status_code == 502, "tried, not refused with 503"
        assert ups["a"].hits == hits + 1 and await attempts_of(tmp_path, "panic") == [("only", "bad_gateway", 502)], \
            "once: no retries on an ejected deployment"

        ups["a"].mode = None
        assert (await ask(client, client.headers)).status_code == 200, "served as soon as it recovers"
        view = (await engines(client))["only"]
        assert (view["breaker"], view["panic"]) == ("closed", False)
        await eventually(lambda: _gauge_is(client, 0.0), "strata_route_panic to clear")
        assert await metric(client, "strata_panic_requests_total", route="m") == 2


async def _gauge_is(client: httpx.AsyncClient, value: float) -> bool:
    return await metric(client, "strata_route_panic", route="m") == value


async def test_a_healthy_fallback_is_used_instead_of_panicking(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["a"].mode = "err500"
    r = route(dep("main", ups["a"]), dep("spare", ups["b"], role="fallback"), retries=0,
              breaker={"consecutive_failures": 1, "cooldown": 60}, **FAST_RETRY)
    async with gateway(tmp_path, r) as client:
        assert (await ask(client, client.headers)).json()["choices"][0]["message"]["content"] == "b"
        hits = ups["a"].hits
        assert (await ask(client, client.headers)).json()["choices"][0]["message"]["content"] == "b"
        assert ups["a"].hits == hits and not (await engines(client))["main"]["panic"]


# --- unit: the attribution rules with a driven clock ------------------------------------------------------------


def test_served_knows_when_someone_else_was_last_served() -> None:
    s = Served()
    assert not s.by_other_since("a", 0)
    s.record("a", 10)
    assert s.by_other_since("b", 5) and not s.by_other_since("a", 5)
    s.record("b", 20)
    s.record("b", 30)
    assert s.by_other_since("b", 10) and not s.by_other_since("b", 11), "a's last success was at 10"
    assert s.by_other_since("a", 30) and s.by_other_since("c", 30)


def test_caller_is_throttled_after_repeated_failures_with_a_doubling_cooldown() -> None:
    clock, cfg = Clock(), BreakerConfig(caller_failures=3, window=30, cooldown=5, cooldown_max=12)
    callers = CallerOutliers(clock)
    assert callers.failed("m", "k", cfg) is None and callers.failed("m", "k", cfg) is None
    clock.now += 31  # the first two left the window
    assert callers.failed("m", "k", cfg) is None and callers.failed("m", "k", cfg) is None
    assert callers.failed("m", "k", cfg) == 5
    assert callers.retry_after("m", "k") == 5 and callers.retry_after("other", "k") == 0
    clock.now += 5
    assert callers.retry_after("m", "k") == 0
    assert callers.failed("m", "k", cfg) == 10, "on probation, one failure is enough"
    clock.now += 10
    assert callers.failed("m", "k", cfg) == 12, "capped at cooldown_max"
    clock.now += 12
    callers.succeeded("m", "k")
    assert callers.failed("m", "k", cfg) is None, "a served request clears the record"
    assert CallerOutliers(clock).failed("m", "k", BreakerConfig(caller_failures=0)) is None
