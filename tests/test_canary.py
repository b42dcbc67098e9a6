"""Canary rollouts: analysis, automatic rollback and promotion, traffic share, operator actions, the CLI.

Three tiers. Unit: ``compare`` on hand-made windows, and ``Rollouts`` walking its step plan on a fake
clock. In-process: the gateway with one real upstream per version (``v1`` the primary, ``v2`` the
canary; ``whoami`` replies name the upstream that answered), the canary made to fail or slow down with
``mode``, and the analysis driven by calling ``reconcile`` on a fake clock (the route's ``interval`` is an
hour, so the background loop stays idle). End to end: ``strata deploy`` against a real server process.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from strata.app import create_app
from strata.config.settings import CanaryConfig, RouteConfig, load_settings
from strata.gateway.state import AppState
from strata.routing.analysis import Outcome, Window, compare
from strata.routing.rollout import SYSTEM_ACTOR, Rollouts
from tests.conftest import healthy, named_upstreams
from tests.servers import ADMIN_KEY, StrataProcess, cli, finished
from tests.test_traffic import HI, chat, dep, engines, error_code, eventually, metric, route, served_by
from tests.upstreams import REPLY, FaultyUpstream

HOUR = 3600.0
# analysis on demand: the background loop waits an hour between passes, the window outlives every test
ON_DEMAND = {"interval": HOUR, "window": 1e6, "min_requests": 10}
# a breaker that never ejects, so every canary failure reaches the analysis
NO_EJECTION = {"consecutive_failures": 1000, "error_rate": 1.0}


class FakeClock:
    def __init__(self, start: float | None = None) -> None:
        self.t = time.monotonic() if start is None else start

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        self.t += seconds
        return self.t


# --- unit: the analysis ----------------------------------------------------------------------------------


def window(n: int, ok: Callable[[int], bool] = lambda i: True, latency: Callable[[int], float] = lambda i: 0.1,
           scores: list[float] | None = None) -> Window:
    w = Window()
    w.outcomes.extend(Outcome(at=float(i), ok=ok(i), latency=latency(i), ttft=latency(i) / 2, cost=0.001)
                      for i in range(n))
    w.scores.extend((float(i), s) for i, s in enumerate(scores or []))
    return w


def worse_metrics(canary: Window, primary: Window, **cfg: Any) -> list[str]:
    return [c.metric for c in compare(canary, primary, CanaryConfig(**cfg)).worse]


def test_ten_failed_requests_do_not_decide() -> None:
    verdict = compare(window(10, ok=lambda i: False), window(200), CanaryConfig())
    assert verdict.worse == []
    error_rate = verdict.checks[0]
    assert (error_rate.metric, error_rate.decided) == ("error_rate", False)
    assert "too few" in error_rate.detail


def test_a_difference_beyond_the_threshold_must_also_be_significant() -> None:
    """One failure in 30 is 3.3% (over the 2% limit) but well within chance against a clean primary."""
    verdict = compare(window(30, ok=lambda i: i != 0), window(30), CanaryConfig())
    assert verdict.checks[0].decided
    assert verdict.worse == []


def test_clearly_worse_error_rate_is_worse() -> None:
    verdict = compare(window(60, ok=lambda i: i % 5 != 0), window(300, ok=lambda i: i % 100 != 0), CanaryConfig())
    assert [c.metric for c in verdict.worse] == ["error_rate"]
    assert "error rate 20.0% vs 1.0% on primary" in verdict.reason


def test_three_times_slower_canary_is_worse_on_latency() -> None:
    rng = random.Random(1)
    canary = window(40, latency=lambda i: rng.uniform(0.25, 0.35))
    primary = window(200, latency=lambda i: rng.uniform(0.08, 0.12))
    assert worse_metrics(canary, primary) == ["latency", "ttft"]
    assert "p95 latency" in compare(canary, primary, CanaryConfig()).reason


def test_similar_distributions_are_not_worse() -> None:
    rng = random.Random(2)
    canary = window(200, ok=lambda i: rng.random() > 0.01, latency=lambda i: rng.lognormvariate(-2, 0.5),
                    scores=[rng.gauss(0.8, 0.1) for _ in range(60)])
    primary = window(800, ok=lambda i: rng.random() > 0.01, latency=lambda i: rng.lognormvariate(-2, 0.5),
                     scores=[rng.gauss(0.8, 0.1) for _ in range(200)])
    canary.quality.extend((0.0, rng.gauss(0.8, 0.1)) for _ in range(40))  # online quality scores
    primary.quality.extend((0.0, rng.gauss(0.8, 0.1)) for _ in range(150))
    verdict = compare(canary, primary, CanaryConfig())
    assert all(c.decided for c in verdict.checks), verdict.as_dict()
    assert verdict.worse == []


def test_feedback_drop_is_worse() -> None:
    rng = random.Random(3)
    canary = window(100, scores=[rng.gauss(0.5, 0.1) for _ in range(30)])
    primary = window(100, scores=[rng.gauss(0.9, 0.1) for _ in range(30)])
    assert worse_metrics(canary, primary) == ["feedback"]


def test_a_few_bad_scores_do_not_decide() -> None:
    canary = window(100, scores=[0.0] * 4)
    primary = window(100, scores=[1.0] * 50)
    assert worse_metrics(canary, primary) == []


# --- unit: the step plan ------------------------------------------------------------------------------------


class Plan:
    """``Rollouts`` over routes held in a dict, with a fake clock; changes and events kept in lists."""

    def __init__(self, traffic: float, **canary: Any) -> None:
        cfg = {"steps": [10, 50, 100], "step_min_seconds": 60, "step_min_requests": 20, "interval": 1,
               "window": HOUR, "min_requests": 10, **canary}
        self.routes = {"m": RouteConfig.model_validate(route(
            {"name": "stable", "engine": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}},
            {"name": "next", "engine": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "y"},
             "role": "canary", "traffic": traffic}, canary=cfg))}
        self.changes: list[tuple[str, str, str]] = []
        self.events: list[str] = []
        self.clock = FakeClock(1000.0)
        self.rollouts = Rollouts(lambda: self.routes, self.apply, self.emit, clock=self.clock)

    async def apply(self, old: RouteConfig, new: RouteConfig, action: str, actor: str, reason: str) -> None:
        self.routes[new.name] = new
        self.rollouts.sync()
        self.changes.append((action, actor, reason))

    def emit(self, kind: str, subject: str, message: str, data: dict[str, Any]) -> None:
        self.events.append(kind)

    def serve(self, canary: int, primary: int = 0) -> None:
        for _ in range(canary):
            self.rollouts.record("m", "canary", True, 0.1)
        for _ in range(primary):
            self.rollouts.record("m", "primary", True, 0.1)

    async def tick(self, seconds: float) -> list[str]:
        return await self.rollouts.reconcile(self.clock.advance(seconds))

    @property
    def deployments(self) -> list[tuple[str, str, float | None]]:
        return [(d.name, d.role, d.traffic) for d in self.routes["m"].deployments]


async def test_steps_wait_for_both_time_and_requests_then_promote() -> None:
    plan = Plan(traffic=10)
    plan.serve(canary=25, primary=100)
    assert await plan.tick(30) == [], "the step is only 30 s old"
    assert plan.rollouts.status("m")["decision"] == "waiting"
    assert await plan.tick(31) == ["m:advance"]
    assert plan.deployments == [("stable", "primary", None), ("next", "canary", 50)]

    assert await plan.tick(120) == [], "no canary request on the new step yet"
    plan.serve(canary=19)
    assert await plan.tick(1) == [], "19 of 20 requests"
    plan.serve(canary=1)
    assert await plan.tick(1) == ["m:advance"]
    assert plan.deployments == [("stable", "primary", None), ("next", "canary", 100)]
    assert plan.rollouts.status("m")["step_seconds"] == 0

    plan.serve(canary=20)
    assert await plan.tick(59) == []
    assert await plan.tick(1) == ["m:promote"]
    assert plan.deployments == [("next", "primary", None)]
    assert plan.events == ["canary_step", "canary_step", "canary_promote"]
    assert [(a, actor) for a, actor, _ in plan.changes] == [
        ("canary_step", SYSTEM_ACTOR), ("canary_step", SYSTEM_ACTOR), ("canary_promote", SYSTEM_ACTOR)]
    assert "10% -> 50%" in plan.changes[0][2] and "50% -> 100%" in plan.changes[1][2]
    assert plan.rollouts.status("m") is None


async def test_analysis_runs_once_per_interval() -> None:
    plan = Plan(traffic=10, interval=30, step_min_seconds=0, step_min_requests=0)
    plan.serve(canary=10, primary=10)
    assert await plan.tick(0) == ["m:advance"]
    assert await plan.tick(29) == [], "the next analysis is due 30 s after the last"
    assert await plan.tick(1) == ["m:advance"]


async def test_no_plan_holds_until_an_operator_promotes() -> None:
    plan = Plan(traffic=5, steps=[], step_min_seconds=0, step_min_requests=0)
    plan.serve(canary=200, primary=200)
    assert await plan.tick(HOUR) == []
    assert plan.rollouts.status("m")["decision"] == "hold"
    assert plan.deployments[1] == ("next", "canary", 5)


async def test_worse_canary_is_rolled_back_even_mid_step() -> None:
    plan = Plan(traffic=10)
    for _ in range(15):
        plan.rollouts.record("m", "canary", False)
    plan.serve(canary=0, primary=100)
    assert await plan.tick(1) == ["m:rollback"]
    assert plan.deployments == [("stable", "primary", None)]
    action, actor, reason = plan.changes[0]
    assert (action, actor) == ("canary_rollback", SYSTEM_ACTOR)
    assert "error rate 100.0% vs 0.0%" in reason


async def test_canary_ejected_by_its_breaker_is_rolled_back_unless_the_primaries_are_out_too() -> None:
    out: set[str] = set()
    plan = Plan(traffic=10)
    plan.rollouts.ejected = lambda name: name in out
    for _ in range(5):
        plan.rollouts.record("m", "canary", False)
    plan.serve(canary=0, primary=100)
    out.update({"next", "stable"})
    assert await plan.tick(1) == [], "the upstream is down for everyone: not the canary's fault"
    out.discard("stable")
    assert await plan.tick(1) == ["m:rollback"], "five failures are too few for the analysis, not for the breaker"
    assert plan.changes[0][2] == "canary ejected by its circuit breaker after repeated failures " \
                                 "(error rate 100% over 5 canary requests)"


# --- in-process gateway ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def version_servers() -> Iterator[dict[str, FaultyUpstream]]:
    yield from named_upstreams("v1", "v2", "v3")


@pytest.fixture
def ups(version_servers: dict[str, FaultyUpstream]) -> dict[str, FaultyUpstream]:
    """Healthy upstreams v1, v2, v3 with their request counters at zero."""
    return healthy(version_servers)


def canary_route(ups: dict[str, FaultyUpstream], traffic: float, breaker: dict[str, Any] | None = None,
                 **canary: Any) -> dict[str, Any]:
    """v1 serves as the primary ``stable``, v2 as the canary ``next``."""
    return route(dep("stable", ups["v1"]), dep("next", ups["v2"], role="canary", traffic=traffic),
                 retries=1, retry_backoff=0.01, breaker=breaker or {}, canary={**ON_DEMAND, **canary})


@asynccontextmanager
async def gateway(data_dir: Path, *routes: dict[str, Any]) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process, lifespan included, with the rollouts on a fake clock.

    Waits for the deployments the router has (the config's routes after replaying route changes).
    """
    app = create_app(load_settings(None, data_dir=data_dir, routes=list(routes), admin_key=ADMIN_KEY,
                                   ledger={"flush_interval": 0.05}))
    state: AppState = app.state.strata
    state.routing.rollouts.clock = FakeClock()
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://strata", timeout=30,
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            client.app = app  # type: ignore[attr-defined]

            async def started() -> bool:
                return set(state.routing.router.deployments) <= set(await engines(client))

            await eventually(started, "every deployment in /admin/engines")
            yield client


def state_of(client: httpx.AsyncClient) -> AppState:
    state: AppState = client.app.state.strata  # type: ignore[attr-defined]
    return state


async def analyse(client: httpx.AsyncClient, *expected: str) -> None:
    """One analysis pass, an interval later on the fake clock, taking the ``expected`` actions."""
    rollouts = state_of(client).routing.rollouts
    clock = rollouts.clock
    assert isinstance(clock, FakeClock)
    before = rollouts.status("m")
    taken = await rollouts.reconcile(clock.advance(HOUR + 1))  # +1: (t + 3600) - t may round below 3600
    assert taken == [f"m:{action}" for action in expected], json.dumps([before, rollouts.status("m")], indent=1)


async def drive(client: httpx.AsyncClient, until: Callable[[list[httpx.Response]], bool],
                limit: int = 600, **body: Any) -> list[httpx.Response]:
    """Send requests ten at a time until ``until(replies)``; every client must get a 200."""
    replies: list[httpx.Response] = []
    while not until(replies):
        assert len(replies) < limit, f"gave up after {len(replies)} requests"
        batch = await asyncio.gather(*(chat(client, **body) for _ in range(10)))
        for r in batch:
            assert r.status_code == 200, r.text
        replies += batch
    return replies


def answered_by(replies: list[httpx.Response], who: str) -> int:
    return sum(served_by(r) == who for r in replies)


async def deployments(client: httpx.AsyncClient) -> list[tuple[str, str, float | None]]:
    r = await client.get("/admin/routes/m")
    assert r.status_code == 200, r.text
    return [(d["name"], d["role"], d["traffic"]) for d in r.json()["deployments"]]


async def changes(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = (await client.get("/admin/routes/m/changes")).json()["data"]
    return data


async def events(client: httpx.AsyncClient, kind: str | None = None) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = (await client.get("/admin/events", params={"kind": kind} if kind else {})).json()[
        "data"]
    return data


async def test_failing_canary_is_rolled_back_and_clients_never_notice(ups: dict[str, FaultyUpstream],
                                                                      tmp_path: Path) -> None:
    ups["v2"].mode = "err500"
    r = canary_route(ups, traffic=30, breaker=NO_EJECTION)
    async with gateway(tmp_path, r) as client:
        replies = await drive(client, lambda _: ups["v2"].hits >= 12)
        assert answered_by(replies, "v1") == len(replies), "failed canary attempts are retried on the primary"
        assert await deployments(client) == [("stable", "primary", None), ("next", "canary", 30)]

        await analyse(client, "rollback")
        assert await deployments(client) == [("stable", "primary", None)]
        change = (await changes(client))[0]
        assert (change["action"], change["actor"]) == ("canary_rollback", SYSTEM_ACTOR)
        assert "error rate 100.0%" in change["reason"], change["reason"]
        (event,) = await events(client, "canary_rollback")
        assert event["subject"] == "m" and "next" in event["message"]
        assert event["data"]["analysis"]["worse"] is True, "the event keeps the evidence"
        assert await metric(client, "strata_events_total", kind="canary_rollback") == 1.0

        hits = ups["v2"].hits
        await drive(client, lambda rs: len(rs) >= 30)
        assert ups["v2"].hits == hits, "a rolled-back canary gets no more traffic"

    async with gateway(tmp_path, r) as client:
        assert await deployments(client) == [("stable", "primary", None)], "the rollback survives a restart"
        await drive(client, lambda rs: len(rs) >= 20)
        assert ups["v2"].hits == hits


async def test_canary_ejected_by_its_breaker_is_rolled_back(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """With the default breaker a dead canary is ejected after 5 failures; the rollout must still end."""
    ups["v2"].mode = "err500"
    async with gateway(tmp_path, canary_route(ups, traffic=30)) as client:
        await drive(client, lambda rs: len(rs) >= 100)
        assert (await engines(client))["next"]["breaker"] == "open"
        await analyse(client, "rollback")
        assert await deployments(client) == [("stable", "primary", None)]
        reason = (await changes(client))[0]["reason"]
        assert "circuit breaker" in reason and "error rate 100%" in reason, reason


async def test_slow_canary_is_rolled_back_on_latency(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["v2"].mode = "slow"  # answers REPLY after 0.3 s
    async with gateway(tmp_path, canary_route(ups, traffic=30)) as client:
        await drive(client, lambda rs: answered_by(rs, REPLY) >= 12)
        await analyse(client, "rollback")
        assert await deployments(client) == [("stable", "primary", None)]
        change = (await changes(client))[0]
        assert (change["action"], change["actor"]) == ("canary_rollback", SYSTEM_ACTOR)
        assert "p95 latency" in change["reason"] and "error rate" not in change["reason"], change["reason"]
        analysis = (await events(client, "canary_rollback"))[0]["data"]["analysis"]
        assert [c["metric"] for c in analysis["checks"] if c["worse"]] == ["latency"]


async def test_healthy_canary_walks_its_steps_and_is_promoted(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    r = canary_route(ups, traffic=10, steps=[10, 50, 100], step_min_seconds=60, step_min_requests=5)
    async with gateway(tmp_path, r) as client:
        await analyse(client)  # no canary request yet: waiting
        await drive(client, lambda rs: answered_by(rs, "v2") >= 10)
        await analyse(client, "advance")
        assert await deployments(client) == [("stable", "primary", None), ("next", "canary", 50)]
        status = (await client.get("/admin/routes/m/rollout")).json()
        assert (status["rollout"]["traffic"], status["rollout"]["next_step"]) == (50, 100)
        assert status["events"][0]["kind"] == "canary_step"

        await drive(client, lambda rs: answered_by(rs, "v2") >= 5)
        await analyse(client, "advance")
        replies = await drive(client, lambda rs: len(rs) >= 10)
        assert answered_by(replies, "v2") == 10, "at 100% the canary takes every request"
        await analyse(client, "promote")

        assert await deployments(client) == [("next", "primary", None)]
        v1 = ups["v1"].hits
        replies = await drive(client, lambda rs: len(rs) >= 20)
        assert answered_by(replies, "v2") == 20 and ups["v1"].hits == v1
        trail = [(c["action"], c["actor"]) for c in reversed(await changes(client))]
        assert trail == [("canary_step", SYSTEM_ACTOR), ("canary_step", SYSTEM_ACTOR),
                         ("canary_promote", SYSTEM_ACTOR)]
        assert [e["kind"] for e in reversed(await events(client))] == ["canary_step", "canary_step",
                                                                        "canary_promote"]
        assert await metric(client, "strata_events_total", kind="canary_step") == 2.0
        assert await metric(client, "strata_events_total", kind="canary_promote") == 1.0
        assert (await client.get("/admin/routes/m/rollout")).json()["rollout"] is None


async def test_a_step_survives_a_restart(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    r = canary_route(ups, traffic=10, steps=[10, 50, 100], step_min_seconds=0, step_min_requests=5)
    async with gateway(tmp_path, r) as client:
        await drive(client, lambda rs: answered_by(rs, "v2") >= 10)
        await analyse(client, "advance")
    async with gateway(tmp_path, r) as client:
        assert await deployments(client) == [("stable", "primary", None), ("next", "canary", 50)]
        rollout = (await client.get("/admin/routes/m/rollout")).json()["rollout"]
        assert (rollout["traffic"], rollout["next_step"], rollout["step_requests"]) == (50, 100, 0)
        replies = await drive(client, lambda rs: len(rs) >= 100)
        assert 0.35 <= answered_by(replies, "v2") / 100 <= 0.65


async def test_canary_takes_its_share_of_traffic(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    async with gateway(tmp_path, canary_route(ups, traffic=20)) as client:
        replies = await drive(client, lambda rs: len(rs) >= 300)
    served = Counter(served_by(r) for r in replies)
    assert set(served) == {"v1", "v2"}
    assert 0.12 <= served["v2"] / 300 <= 0.28, served
    assert ups["v2"].hits == served["v2"]


async def test_with_affinity_a_user_always_lands_on_the_same_side(ups: dict[str, FaultyUpstream],
                                                                   tmp_path: Path) -> None:
    users = [f"user-{i}" for i in range(100)]
    async with gateway(tmp_path, {**canary_route(ups, traffic=20), "affinity": True}) as client:
        sides: dict[str, set[str]] = {u: set() for u in users}
        for _ in range(3):
            for batch in range(0, len(users), 10):
                group = users[batch:batch + 10]
                replies = await asyncio.gather(*(chat(client, user=u) for u in group))
                for u, reply in zip(group, replies, strict=True):
                    sides[u].add(served_by(reply))
    assert all(len(s) == 1 for s in sides.values()), {u: s for u, s in sides.items() if len(s) > 1}
    on_canary = sum(s == {"v2"} for s in sides.values())
    assert 8 <= on_canary <= 35, on_canary


async def test_operator_starts_promotes_and_rolls_back_with_instant_effect(ups: dict[str, FaultyUpstream],
                                                                           tmp_path: Path) -> None:
    r = route(dep("stable", ups["v1"]), retries=1, canary={"interval": HOUR})
    async with gateway(tmp_path, r) as client:
        no_canary = await client.post("/admin/routes/m/rollback")
        assert no_canary.status_code == 400
        assert no_canary.json()["error"].keys() == {"message", "type", "param", "code"}
        assert (no_canary.json()["error"]["type"], error_code(no_canary)) == ("invalid_request_error", "no_canary")
        assert (await client.post("/admin/routes/m/promote")).status_code == 400

        started = await client.post("/admin/routes/m/canary", json={"engine": {"base_url": ups["v2"].base_url},
                                                                    "traffic": 50, "reason": "v2 is out"})
        assert started.status_code == 200, started.text
        assert await deployments(client) == [("stable", "primary", None), ("m-canary", "canary", 50)]
        again = await client.post("/admin/routes/m/canary", json={"engine": {"base_url": ups["v3"].base_url},
                                                                  "traffic": 5})
        assert (again.status_code, error_code(again)) == (400, "canary_exists")
        replies = await drive(client, lambda rs: len(rs) >= 40)
        assert {served_by(x) for x in replies} == {"v1", "v2"}

        promoted = await client.post("/admin/routes/m/promote", json={"reason": "looks good"})
        assert promoted.status_code == 200, promoted.text
        assert [(d["name"], d["role"]) for d in promoted.json()["route"]["deployments"]] == [("m-canary", "primary")]
        replies = await drive(client, lambda rs: len(rs) >= 20)
        assert answered_by(replies, "v2") == 20

        nxt = await client.post("/admin/routes/m/canary", json={"engine": {"base_url": ups["v3"].base_url},
                                                                "traffic": 50})
        assert nxt.status_code == 200, "the next rollout starts without having to name the new canary: " + nxt.text
        replies = await drive(client, lambda rs: len(rs) >= 40)
        assert {served_by(x) for x in replies} == {"v2", "v3"}
        v3 = ups["v3"].hits
        rolled = await client.post("/admin/routes/m/rollback", json={"reason": "v3 rambles"})
        assert rolled.status_code == 200, rolled.text
        replies = await drive(client, lambda rs: len(rs) >= 20)
        assert answered_by(replies, "v2") == 20 and ups["v3"].hits == v3

        trail = [(c["action"], c["actor"], c["reason"]) for c in reversed(await changes(client))]
        assert [t[:2] for t in trail] == [("start_canary", "admin-env"), ("canary_promote", "admin-env"),
                                          ("start_canary", "admin-env"), ("canary_rollback", "admin-env")]
        assert (trail[0][2], trail[1][2], trail[3][2]) == ("v2 is out", "looks good", "v3 rambles")
        assert [e["kind"] for e in await events(client)] == ["canary_rollback", "canary_promote"]


async def test_canary_settings_belong_to_that_rollout_only(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """``steps`` and analysis limits given to one canary (``strata deploy --step/--analysis``) end with it:
    the route's own settings are untouched, and the next canary without a plan holds instead of inheriting."""
    r = route(dep("stable", ups["v1"]), retries=1, canary={**ON_DEMAND, "step_min_seconds": 0, "step_min_requests": 0})
    async with gateway(tmp_path, r) as client:
        route_canary = (await client.get("/admin/routes/m")).json()["canary"]
        bad = await client.post("/admin/routes/m/canary", json={"engine": {"base_url": ups["v2"].base_url},
                                                                "traffic": 5, "canary": {"max_ttft_ration": 3}})
        assert (bad.status_code, bad.json()["error"]["param"]) == (400, "canary"), bad.text
        assert "max_ttft_ration" in bad.json()["error"]["message"]
        shadow = await client.post("/admin/routes/m/shadow", json={"traffic": 5, "steps": [5, 50]})
        assert (shadow.status_code, shadow.json()["error"]["param"]) == (400, "steps"), "a plan is for canaries"

        started = await client.post("/admin/routes/m/canary", json={
            "engine": {"base_url": ups["v2"].base_url}, "steps": [50, 100], "canary": {"max_latency_ratio": 4}})
        assert started.status_code == 200, started.text
        rollout = (await client.get("/admin/routes/m/rollout")).json()["rollout"]
        assert (rollout["traffic"], rollout["steps"]) == (50, [50, 100])
        assert rollout["settings"] == {"steps": [50, 100], "max_latency_ratio": 4}
        await drive(client, lambda rs: answered_by(rs, "v2") >= 15 and answered_by(rs, "v1") >= 15)
        await analyse(client, "advance")
        await analyse(client, "promote")
        after = (await client.get("/admin/routes/m")).json()
        assert after["canary"] == route_canary
        assert [(d["name"], d["role"], d["canary"]) for d in after["deployments"]] == [("m-canary", "primary", None)]

        assert (await client.post("/admin/routes/m/canary", json={"engine": {"base_url": ups["v3"].base_url},
                                                                  "traffic": 10})).status_code == 200
        await drive(client, lambda rs: answered_by(rs, "v3") >= 15 and answered_by(rs, "v2") >= 15)
        await analyse(client)
        rollout = (await client.get("/admin/routes/m/rollout")).json()["rollout"]
        assert (rollout["steps"], rollout["settings"], rollout["decision"]) == ([], {}, "hold")
        assert (await client.post("/admin/routes/m/rollback")).status_code == 200
        assert (await client.get("/admin/routes/m")).json()["canary"] == route_canary


async def test_canary_traffic_gauge_follows_the_rollout(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """The background loop publishes the canary's share; a rolled-back canary must not linger at 20%."""
    async with gateway(tmp_path, canary_route(ups, traffic=20, interval=0.05)) as client:
        async def gauge_is(expected: float | None) -> bool:
            return await metric(client, "strata_canary_traffic_ratio", route="m", deployment="next") == expected

        await eventually(lambda: gauge_is(0.2), "the gauge to show 0.2 (20%)")
        assert (await client.post("/admin/routes/m/rollback")).status_code == 200
        await eventually(lambda: gauge_is(None), "the gauge to drop the rolled-back canary", timeout=3)


# --- end to end: the CLI against a real server ----------------------------------------------------------------



def cli_ok(proc: StrataProcess, *args: str) -> str:
    p = finished(cli(proc, *args))
    assert p.returncode == 0, p.stderr
    return p.stdout


def assert_one_line_error(p: subprocess.Popen[str], needle: str) -> None:
    done = finished(p)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in done.stderr + done.stdout


def test_cli_starts_follows_and_rolls_back_a_canary(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    proc = StrataProcess(tmp_path, {"routes": [route(dep("stable", ups["v1"]))]})
    too_much = cli(proc, "deploy", "m", "--model", "whoami", "--canary", "150%")  # refused before any request
    proc.start(60)
    try:
        oai = proc.client()

        def served(n: int) -> Counter[str]:
            return Counter(oai.chat.completions.create(model="m", messages=HI).choices[0].message.content
                           for _ in range(n))

        assert_one_line_error(too_much, "150%")
        out = cli_ok(proc, "deploy", "m", "--model", "whoami", "--base-url", ups["v2"].base_url, "--canary", "50%",
                     "--step", "50,100", "--step-min-time", "1h")
        assert "m-canary" in out and "canary" in out
        assert set(served(30)) == {"v1", "v2"}

        second = cli(proc, "deploy", "m", "--model", "whoami", "--canary", "5%")
        status = cli_ok(proc, "deploy", "status", "m")
        assert "canary m-canary at 50%" in status and "50% -> 100%" in status, status
        assert_one_line_error(second, "already has a canary")
        rollout = proc.admin("GET", "/admin/routes/m/rollout").json()["rollout"]
        assert (rollout["canary"], rollout["traffic"], rollout["steps"]) == ("m-canary", 50, [50, 100])
        assert rollout["step_requests"] > 0

        assert "rolled back" in cli_ok(proc, "deploy", "rollback", "m", "--reason", "cli test")
        assert served(20) == Counter({"v1": 20})
        latest = proc.admin("GET", "/admin/routes/m/changes").json()["data"][0]
        assert (latest["action"], latest["actor"], latest["reason"]) == ("canary_rollback", "admin-env", "cli test")
        assert proc.metric("strata_events_total", kind="canary_rollback") == 1.0

        cli_ok(proc, "deploy", "m", "--model", "whoami", "--base-url", ups["v2"].base_url, "--canary", "5%")
        status = cli_ok(proc, "deploy", "status", "m")
        assert "canary m-canary at 5% · plan (no plan: promote by hand)" in status, "the last canary's plan is gone"
    finally:
        proc.stop()
