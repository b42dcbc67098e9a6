"""Rate limits, budgets and the shared-state backends, as clients and operators see them.

The gateway runs in-process on the memory backend and on a real Redis (a unique ``state.key_prefix`` per
test), and as two real ``strata up`` processes sharing one SQLite file and one Redis. The upstream is
``FaultyUpstream``'s ``ok`` model: every answer reports 7 prompt and 3 completion tokens, so with the
prices below a request costs exactly ``COST``. Redis outages are played on a redis-server of the test's
own, killed and restarted on the same port; the shared one is never touched beyond its test keys.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.servers import ADMIN_KEY, StrataProcess, cli, finished, ledger_rows, wait_for
from tests.test_cli import assert_one_line_error
from tests.test_traffic import chat, dep, eventually, gateway, metric, route, sdk
from tests.upstreams import FaultyUpstream, free_port

REDIS_URL = "redis://127.0.0.1:6379/0"
PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
PROMPT = "hi"  # the gateway's estimate (chars/4 + 4 per message + 3) is 7 tokens, as the upstream reports
ASK = [{"role": "user", "content": PROMPT}]
COST = (7 * 1000 + 3 * 2000) / 1e6  # what every answer costs; also its maximum cost at max_tokens=3


# --- helpers ---------------------------------------------------------------------------------------------


def redis_reachable(url: str = REDIS_URL) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def redis_keys(prefix: str) -> list[bytes]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match=f"{prefix}:*"))
    finally:
        client.close()


def shared_redis(prefix: str) -> dict[str, Any]:
    """State settings on the shared Redis; a generous timeout so a loaded machine does not fail over."""
    return {"backend": "redis", "redis_url": REDIS_URL, "key_prefix": prefix, "timeout": 2.0}


@pytest.fixture
def prefix() -> Iterator[str]:
    """A Redis key prefix of this test's own (skips when Redis is away); its keys are deleted after."""
    if not redis_reachable():
        pytest.skip(f"Redis not reachable at {REDIS_URL}")
    name = f"strata-test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = redis_keys(name)
    if keys:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(*keys)
        client.close()


@pytest.fixture(params=["memory", "redis"])
def state_cfg(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {"backend": "memory"}
    return shared_redis(request.getfixturevalue("prefix"))


async def assert_counted_on(client: httpx.AsyncClient, cfg: dict[str, Any]) -> None:
    """On Redis, the counters really lived there: no fallback to local counting happened."""
    if cfg["backend"] != "redis":
        return
    assert await metric(client, "strata_state_backend_up") == 1.0
    assert not await metric(client, "strata_state_backend_errors_total")
    assert redis_keys(cfg["key_prefix"])


class RedisServer:
    """A redis-server of the test's own on a free port, to kill and restart (never the shared one)."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            pytest.skip("redis-server not installed")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--daemonize", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: redis_reachable(self.url), 10, f"redis-server on port {self.port}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.kill()


def priced(up: FaultyUpstream) -> dict[str, Any]:
    return route(dep("d", up, "ok", price=PRICE))


async def new_key(client: httpx.AsyncClient, team: str) -> tuple[str, str]:
    """A non-admin key in ``team``: (its id, its secret)."""
    r = await client.post("/admin/keys", json={"name": f"{team}-svc", "team": team})
    assert r.status_code == 200, r.text
    return r.json()["id"], r.json()["key"]


async def ask(client: httpx.AsyncClient, key: str = ADMIN_KEY, tags: str | None = None,
              **body: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **({"X-Strata-Tags": tags} if tags else {})}
    return await client.post("/v1/chat/completions", headers=headers,
                             json={"model": "m", "messages": ASK, "max_tokens": 3, **body})


def refusal(r: httpx.Response, code: str, retry: bool = True) -> str:
    """A 429 in OpenAI's error shape (a rate limit's with a Retry-After); returns its message."""
    assert r.status_code == 429, r.text
    err = r.json()["error"]
    assert (err["type"], err["code"]) == ("rate_limit_error", code), err
    if code == "rate_limit_exceeded" and retry:
        assert int(r.headers["retry-after"]) >= 1
    message: str = err["message"]
    return message


async def spent(data_dir: Path, n_rows: int, match: Any) -> float:
    """Total ledger cost of the rows ``match`` selects, once ``n_rows`` rows are written."""
    rows = await eventually(lambda: (rs := ledger_rows(data_dir)) and len(rs) >= n_rows and rs,
                            f"{n_rows} ledger rows")
    return float(sum(r["cost_usd"] or 0.0 for r in rows if match(r)))


async def events(client: httpx.AsyncClient, kind: str, subject: str) -> list[dict[str, Any]]:
    r = await client.get("/admin/events", params={"kind": kind, "subject": subject})
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


# --- rate limits -------------------------------------------------------------------------------------------


async def test_rpm_admits_exactly_the_limit(upstream: FaultyUpstream, tmp_path: Path,
                                            state_cfg: dict[str, Any]) -> None:
    """rpm 5: five quick requests pass with remaining 4..0, the rest are 429 naming the limit; concurrent
    requests of another key get exactly five too (each key its own counter under ``subject: "*"``)."""
    limits = [{"scope": "key", "rpm": 5}]
    async with gateway(tmp_path, priced(upstream), state=state_cfg, limits=limits) as client:
        replies = [await ask(client) for _ in range(7)]
        assert [r.status_code for r in replies] == [200] * 5 + [429] * 2
        assert [r.headers["x-ratelimit-remaining-requests"] for r in replies[:5]] == ["4", "3", "2", "1", "0"]
        assert {r.headers["x-ratelimit-limit-requests"] for r in replies[:5]} == {"5"}
        assert replies[0].headers["x-ratelimit-reset-requests"] == "12s"  # one request's share of the minute
        for r in replies[5:]:
            message = refusal(r, "rate_limit_exceeded")
            assert "key 'admin-env'" in message and "requests per minute: limit 5" in message, message
            assert 1 <= int(r.headers["retry-after"]) <= 12  # one request frees up every 60/5 s
        async with sdk(client) as oai:
            with pytest.raises(openai.RateLimitError, match="limit 5"):
                await oai.chat.completions.create(model="m", messages=ASK, max_tokens=3)

        _, other = await new_key(client, "burst")
        burst = await asyncio.gather(*(ask(client, other) for _ in range(12)))
        assert sorted(r.status_code for r in burst) == [200] * 5 + [429] * 7
        assert sorted(r.headers["x-ratelimit-remaining-requests"] for r in burst if r.status_code == 200) == [
            "0", "1", "2", "3", "4"]
        assert await metric(client, "strata_rate_limited_total", scope="key", kind="requests") == 2 + 1 + 7
        await assert_counted_on(client, state_cfg)


async def test_tpm_counts_the_prompt_first_and_the_completion_after(upstream: FaultyUpstream,
                                                                    tmp_path: Path) -> None:
    """tpm 100: a request holds its prompt estimate at admission and is charged its real usage after,
    so the next request sees both; one that would pass what is left, or the whole limit, is refused."""
    async with gateway(tmp_path, priced(upstream), limits=[{"scope": "key", "tpm": 100}]) as client:
        first = await chat(client)  # "hi": estimated at 7 tokens; the answer reports 7 prompt + 3 completion
        assert first.status_code == 200, first.text
        assert (first.headers["x-ratelimit-limit-tokens"], first.headers["x-ratelimit-remaining-tokens"]) == (
            "100", "93")
        await asyncio.sleep(0.2)  # the charge for the answer lands just after the response
        second = await chat(client)
        left = int(second.headers["x-ratelimit-remaining-tokens"])
        assert 83 <= left <= 85, left  # 100 - 10 used - 7 held, plus what refilled (86 if never charged)

        too_much = await chat(client, messages=[{"role": "user", "content": "x" * 4 * (left + 10)}])
        message = refusal(too_much, "rate_limit_exceeded")
        assert "tokens per minute: limit 100" in message and "try again in" in message, message

        huge = await chat(client, messages=[{"role": "user", "content": "x" * 404}])
        message = refusal(huge, "rate_limit_exceeded", retry=False)
        assert "limit 100" in message and "This request alone needs about 108 tokens" in message, message
        assert "retry-after" not in huge.headers  # retrying can never help

        await asyncio.sleep(0.2)
        after = await chat(client)  # the two refusals took nothing
        assert after.status_code == 200, after.text
        assert left - 12 <= int(after.headers["x-ratelimit-remaining-tokens"]) <= left - 8  # 3 + 7 since
        assert await metric(client, "strata_rate_limited_total", scope="key", kind="tokens") == 2


async def test_key_team_and_route_limits_the_strictest_decides(upstream: FaultyUpstream, tmp_path: Path,
                                                               state_cfg: dict[str, Any]) -> None:
    """Every matching rule counts, all or none: a refusal by one rule consumes nothing on the others."""
    limits = [{"scope": "key", "rpm": 10}, {"scope": "route", "subject": "m", "rpm": 4},
              {"scope": "team", "subject": "alpha", "rpm": 3}]  # the route is counted before the team refuses
    async with gateway(tmp_path, priced(upstream), state=state_cfg, limits=limits) as client:
        _, alpha = await new_key(client, "alpha")
        _, beta = await new_key(client, "beta")
        replies = [await ask(client, alpha) for _ in range(4)]
        assert [r.status_code for r in replies] == [200, 200, 200, 429]
        assert [(r.headers["x-ratelimit-limit-requests"], r.headers["x-ratelimit-remaining-requests"])
                for r in replies[:3]] == [("3", "2"), ("3", "1"), ("3", "0")]
        message = refusal(replies[3], "rate_limit_exceeded")
        assert "team 'alpha'" in message and "limit 3" in message, message

        # the route had 3 of 4 used: the refused 4th request did not take the last one
        others = [await ask(client, beta) for _ in range(2)]
        assert [r.status_code for r in others] == [200, 429]
        assert (others[0].headers["x-ratelimit-limit-requests"], others[0].headers["x-ratelimit-remaining-requests"]
                ) == ("4", "0")
        message = refusal(others[1], "rate_limit_exceeded")
        assert "model 'm'" in message and "limit 4" in message, message
        assert await metric(client, "strata_rate_limited_total", scope="team", kind="requests") == 1
        assert await metric(client, "strata_rate_limited_total", scope="route", kind="requests") == 1
        await assert_counted_on(client, state_cfg)


# --- budgets -----------------------------------------------------------------------------------------------


async def test_nearly_spent_budget_holds_under_64_concurrent_requests(upstream: FaultyUpstream, tmp_path: Path,
                                                                      state_cfg: dict[str, Any]) -> None:
    """Reservations of each request's maximum cost keep a concurrent burst within the cap: checking
    spend alone would let all 64 through."""
    cap = 2 * COST + 0.06  # two requests already spent, then room for four
    budgets = [{"scope": "team", "subject": "alpha", "period": "day", "cap_usd": cap}]
    async with gateway(tmp_path, priced(upstream), state=state_cfg, budgets=budgets) as client:
        _, key = await new_key(client, "alpha")
        for _ in range(2):
            assert (await ask(client, key)).status_code == 200
        burst = await asyncio.gather(*(ask(client, key) for _ in range(64)))
        served = [r for r in burst if r.status_code == 200]
        refused = [r for r in burst if r.status_code != 200]
        assert 1 <= len(served) <= 4, len(served)
        for r in refused:
            assert "Budget exceeded for team 'alpha'" in refusal(r, "budget_exceeded")
        total = await spent(tmp_path, 66, lambda row: row["team"] == "alpha")
        assert total == pytest.approx((2 + len(served)) * COST)
        assert total - cap < COST
        await assert_counted_on(client, state_cfg)


async def test_two_gateway_processes_share_one_budget(upstream: FaultyUpstream, tmp_path: Path, prefix: str) -> None:
    """Two replicas (one SQLite file, one Redis): a burst split between them stays within the cap,
    where counters per replica would each admit the whole remainder."""
    cap = 2 * COST + 0.06
    config = {
        "routes": [{"name": "m", "deployments": [
            {"name": "d", "engine": {"type": "openai", "base_url": upstream.base_url, "model": "ok"},
             "price": PRICE}]}],
        "database": {"url": f"sqlite:///{tmp_path / 'strata.db'}"},  # what ledger_rows(tmp_path) reads
        "state": shared_redis(prefix),
        "ledger": {"flush_interval": 0.05},
        "budgets": [{"scope": "tag", "subject": "feature=search", "period": "month", "cap_usd": cap}],
    }
    replicas = [StrataProcess(tmp_path / name, config) for name in ("a", "b")]
    try:
        for p in replicas:
            p.start(ready_timeout=60)
        async with httpx.AsyncClient(timeout=30) as http:

            async def one(p: StrataProcess) -> httpx.Response:
                return await http.post(p.url + "/v1/chat/completions",
                                       headers={"Authorization": f"Bearer {ADMIN_KEY}",
                                                "X-Strata-Tags": "feature=search"},
                                       json={"model": "m", "messages": ASK, "max_tokens": 3})

            for p in replicas:
                assert (await one(p)).status_code == 200
            await asyncio.sleep(0.3)  # both settled
            burst = await asyncio.gather(*(one(replicas[i % 2]) for i in range(64)))
        served = [r for r in burst if r.status_code == 200]
        assert 1 <= len(served) <= 4, len(served)
        for r in burst:
            if r.status_code != 200:
                assert refusal(r, "budget_exceeded").startswith("Budget exceeded for tag feature=search: $")
        for p in replicas:
            p.stop()
        rows = ledger_rows(tmp_path)
        assert len(rows) == 66
        total = sum(r["cost_usd"] or 0.0 for r in rows if (r["tags"] or {}).get("feature") == "search")
        assert total == pytest.approx((2 + len(served)) * COST)
        assert total - cap < COST
    finally:
        for p in replicas:
            p.stop()


async def test_alerts_fire_once_per_threshold_under_concurrency(upstream: FaultyUpstream, tmp_path: Path,
                                                                state_cfg: dict[str, Any]) -> None:
    """Short prompts are estimated low, so concurrent requests carry spend past the cap: each alert share
    is crossed once and reported once, and the refusals that follow report ``budget_exceeded`` once."""
    budgets = [{"scope": "tag", "subject": "feature=alerts", "period": "day", "cap_usd": 0.03}]
    hi = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "tags": "feature=alerts"}
    slow = route(dep("d", upstream, "slow", price=PRICE))  # answers after 0.3 s: the whole burst is in flight
    async with gateway(tmp_path, slow, state=state_cfg, budgets=budgets) as client:
        for _ in range(2):
            burst = await asyncio.gather(*(ask(client, **hi) for _ in range(64)))
            assert any(r.status_code == 429 for r in burst)
        total = await spent(tmp_path, 128, lambda row: row["tags"].get("feature") == "alerts")
        assert total >= 0.03  # past the cap: every threshold was crossed

        await eventually(lambda: _events_at_least(client, "budget_alert", "feature=alerts", 3), "three budget alerts")
        await asyncio.sleep(0.3)  # a duplicate would land by now
        alerts = await events(client, "budget_alert", "feature=alerts")
        assert sorted(a["data"]["share"] for a in alerts) == [0.5, 0.8, 1.0]
        assert {(a["data"]["scope"], a["data"]["period"], a["data"]["cap_usd"]) for a in alerts} == {
            ("tag", "day", 0.03)}
        assert any("reached 100% of its day budget" in a["message"] for a in alerts), alerts
        exceeded = await events(client, "budget_exceeded", "feature=alerts")
        assert len(exceeded) == 1, exceeded
        assert "refused a request" in exceeded[0]["message"]
        await assert_counted_on(client, state_cfg)


async def _events_at_least(client: httpx.AsyncClient, kind: str, subject: str, n: int) -> list[dict[str, Any]]:
    found = await events(client, kind, subject)
    return found if len(found) >= n else []


async def test_budget_counts_spend_from_before_a_restart(upstream: FaultyUpstream, tmp_path: Path) -> None:
    """The memory backend forgets on restart; the budget starts again from the ledger's spend."""
    budgets = [{"scope": "key", "subject": "admin-env", "period": "month", "cap_usd": 0.05}]
    async with gateway(tmp_path, priced(upstream), budgets=budgets) as client:
        for _ in range(3):
            assert (await ask(client)).status_code == 200
    async with gateway(tmp_path, priced(upstream), budgets=budgets) as client:
        (listed,) = (await client.get("/admin/budgets")).json()["data"]
        assert listed["spent_usd"] == pytest.approx(3 * COST)
        message = refusal(await ask(client), "budget_exceeded")  # 0.039 + 0.013 > 0.05
        assert "key 'admin-env': $0.0390 of $0.05 spent this month" in message, message


# --- the shared state when Redis goes away ------------------------------------------------------------------


async def test_redis_down_fail_open_counts_locally_then_recovers(upstream: FaultyUpstream, tmp_path: Path,
                                                                 own_redis: RedisServer) -> None:
    state = {"backend": "redis", "redis_url": own_redis.url, "key_prefix": "t", "retry_interval": 0.3,
             "timeout": 1.0, "on_unavailable": "fail-open"}
    async with gateway(tmp_path, priced(upstream), state=state, limits=[{"scope": "key", "rpm": 5}]) as client:
        assert [(await ask(client)).status_code for _ in range(2)] == [200, 200]
        assert await metric(client, "strata_state_backend_up") == 1.0

        own_redis.kill()
        replies = [await ask(client) for _ in range(7)]  # this replica's own counters start afresh
        assert [r.status_code for r in replies] == [200] * 5 + [429] * 2
        assert "limit 5" in refusal(replies[-1], "rate_limit_exceeded")
        assert await metric(client, "strata_state_backend_up") == 0.0
        assert (await metric(client, "strata_state_backend_errors_total") or 0) >= 1

        own_redis.start()  # empty, on the same port
        await asyncio.sleep(0.3)
        assert (await ask(client)).status_code == 200  # shared counting again: Redis's counter is fresh
        assert await metric(client, "strata_state_backend_up") == 1.0
        assert redis_reachable(own_redis.url)


async def test_budget_counters_lost_with_redis_start_again_from_the_ledger(upstream: FaultyUpstream, tmp_path: Path,
                                                                          own_redis: RedisServer) -> None:
    """A request in flight while Redis goes away (or comes back empty) settles into a counter that is
    not there: that counter must start from the ledger's spend, not from this one request, or the cap
    stops holding on the local counters during the outage and on the shared ones after it."""
    state = {"backend": "redis", "redis_url": own_redis.url, "key_prefix": "t", "retry_interval": 0.2,
             "timeout": 1.0, "on_unavailable": "fail-open"}
    budgets = [{"scope": "key", "subject": "admin-env", "period": "day", "cap_usd": 0.06}]
    stall = {"name": "stall", "deployments": [dep("s", upstream, "stall", price=PRICE)]}

    async with gateway(tmp_path, priced(upstream), stall, state=state, budgets=budgets) as client:

        async def held() -> asyncio.Task[httpx.Response]:
            """A request admitted (its maximum cost reserved) and held at the upstream."""
            hits = upstream.hits
            task = asyncio.create_task(ask(client, model="stall"))
            await eventually(lambda: upstream.hits > hits, "the request to reach the upstream")
            return task

        async def cancel(task: asyncio.Task[httpx.Response], rows: int) -> None:
            task.cancel()  # the client gives up: the request settles at no cost
            await asyncio.gather(task, return_exceptions=True)
            await spent(tmp_path, rows, lambda row: True)

        for _ in range(2):
            assert (await ask(client)).status_code == 200
        first = await held()
        own_redis.kill()
        await cancel(first, 3)  # settles while Redis is away
        assert (await ask(client)).status_code == 200  # local counter: $0.026 from the ledger + $0.013
        second = await held()  # reserved locally: $0.052 of $0.06
        assert (await ask(client)).status_code == 429
        assert await metric(client, "strata_state_backend_up") == 0.0

        await asyncio.to_thread(own_redis.start)  # back, and empty
        await asyncio.sleep(0.3)
        await cancel(second, 6)  # settles on Redis again
        statuses = [(await ask(client)).status_code for _ in range(2)]
        assert statuses == [200, 429], statuses  # $0.039 spent: room for one more
        assert await metric(client, "strata_state_backend_up") == 1.0
        total = await spent(tmp_path, 8, lambda row: True)
        assert total == pytest.approx(4 * COST)


async def test_redis_down_fail_closed_refuses_with_503(upstream: FaultyUpstream, tmp_path: Path,
                                                       own_redis: RedisServer) -> None:
    state = {"backend": "redis", "redis_url": own_redis.url, "key_prefix": "t", "retry_interval": 0.3,
             "timeout": 1.0, "on_unavailable": "fail-closed"}
    async with gateway(tmp_path, priced(upstream), state=state, limits=[{"scope": "key", "rpm": 100}]) as client:
        assert (await ask(client)).status_code == 200
        own_redis.kill()
        for _ in range(2):
            r = await ask(client)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "state_unavailable"
            assert int(r.headers["retry-after"]) >= 1
        assert await metric(client, "strata_state_backend_up") == 0.0

        own_redis.start()
        await asyncio.sleep(0.3)
        assert (await ask(client)).status_code == 200
        assert await metric(client, "strata_state_backend_up") == 1.0


# --- the admin API and the CLI -----------------------------------------------------------------------------


def assert_error(r: httpx.Response, status: int, param: str | None = None, needle: str = "") -> None:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert needle in err["message"], err
    if param is not None:
        assert err["param"] == param, err


async def test_admin_api_sets_lists_audits_and_removes_rules(upstream: FaultyUpstream, tmp_path: Path) -> None:
    async with gateway(tmp_path, priced(upstream)) as client:
        key_id, key = await new_key(client, "t8")
        assert (await ask(client, key)).status_code == 200

        r = await client.put("/admin/limits", json={"scope": "key", "subject": key_id, "rpm": 1})
        assert r.status_code == 200, r.text
        assert (r.json()["rpm"], r.json()["source"], r.json()["updated_by"]) == (1, "runtime", "admin-env")
        first, second = [await ask(client, key) for _ in range(2)]  # applies to the next request, no restart
        assert first.status_code == 200 and first.headers["x-ratelimit-limit-requests"] == "1"
        assert f"key '{key_id}'" in refusal(second, "rate_limit_exceeded")

        before = (await client.get("/admin/limits")).json()["data"]
        for bad, param, needle in [
            ({"scope": "planet", "rpm": 1}, "scope", ""),
            ({"scope": "key", "subject": key_id}, None, "a limit needs rpm, tpm or both"),
            ({"scope": "key", "rpm": 0}, "rpm", ""),
            ({"scope": "key", "rpm": 5, "burst": 2}, "burst", ""),
        ]:
            assert_error(await client.put("/admin/limits", json=bad), 400, param, needle)
        for bad, param, needle in [
            ({"scope": "tag", "subject": "search", "cap_usd": 1}, None, "NAME=VALUE"),
            ({"scope": "team", "subject": "t8", "cap_usd": -1}, "cap_usd", ""),
            ({"scope": "team", "subject": "t8", "cap_usd": 1, "period": "year"}, "period", ""),
            ({"scope": "team", "subject": "t8", "cap_usd": 1, "alerts": [1.5]}, None, "alerts"),
        ]:
            assert_error(await client.put("/admin/budgets", json=bad), 400, param, needle)
        assert_error(await client.put("/admin/limits", content=b"{not json"), 400)
        assert (await client.get("/admin/limits")).json()["data"] == before
        assert (await client.get("/admin/budgets")).json()["data"] == []

        user = {"Authorization": f"Bearer {key}"}
        assert_error(await client.get("/admin/limits", headers=user), 403)
        assert_error(await client.put("/admin/limits", json={"scope": "key", "rpm": 1}, headers=user), 403)
        assert_error(await client.delete("/admin/limits", params={"scope": "key", "subject": key_id},
                                         headers=user), 403)
        assert (await client.get("/admin/limits")).json()["data"] == before

        r = await client.delete("/admin/limits", params={"scope": "key", "subject": key_id})
        assert r.status_code == 200 and r.json()["deleted"] is True, r.text
        assert (await ask(client, key)).status_code == 200  # the limit is gone at once
        assert_error(await client.delete("/admin/limits", params={"scope": "key", "subject": key_id}), 404)
        assert_error(await client.delete("/admin/limits", params={"scope": "key"}), 400, "subject")
        changes = (await client.get("/admin/limits/changes")).json()["data"]
        spec = {"scope": "key", "subject": key_id, "rpm": 1, "tpm": None}
        assert [(c["action"], c["actor"], c["before"], c["after"]) for c in changes] == [
            ("remove", "admin-env", spec, None), ("set", "admin-env", None, spec)]

        # a run-time budget starts from the team's spend so far: 3 requests, $0.039 of a $0.03 cap
        await spent(tmp_path, 4, lambda row: True)
        r = await client.put("/admin/budgets", json={"scope": "team", "subject": "t8", "cap_usd": 0.03,
                                                      "period": "day"})
        assert r.status_code == 200, r.text
        (listed,) = (await client.get("/admin/budgets")).json()["data"]
        assert (listed["source"], listed["spent_usd"]) == ("runtime", pytest.approx(3 * COST))
        assert "team 't8'" in refusal(await ask(client, key), "budget_exceeded")
        assert (await ask(client)).status_code == 200  # another team is not affected
        r = await client.put("/admin/budgets", json={"scope": "team", "subject": "t8", "cap_usd": 0.035,
                                                      "period": "day"})  # replaces the rule
        assert r.status_code == 200, r.text
        assert [b["cap_usd"] for b in (await client.get("/admin/budgets")).json()["data"]] == [0.035]
        assert "of $0.035 spent today" in refusal(await ask(client, key), "budget_exceeded")
        r = await client.delete("/admin/budgets", params={"scope": "team", "subject": "t8", "period": "day"})
        assert r.status_code == 200, r.text
        assert (await ask(client, key)).status_code == 200
        changes = (await client.get("/admin/budgets/changes")).json()["data"]
        caps = [(c["action"], c["actor"], c["before"] and c["before"]["cap_usd"], c["after"] and c["after"]["cap_usd"])
                for c in changes]
        assert caps == [("remove", "admin-env", 0.035, None), ("set", "admin-env", 0.03, 0.035),
                        ("set", "admin-env", None, 0.03)]



def test_cli_sets_and_lists_limits_and_budgets(upstream: FaultyUpstream, tmp_path: Path) -> None:
    config = {"routes": [{"name": "m", "deployments": [
        {"name": "d", "engine": {"type": "openai", "base_url": upstream.base_url, "model": "ok"}, "price": PRICE}]}]}
    proc = StrataProcess(tmp_path, config).start(ready_timeout=60)
    try:
        runs = [cli(proc, "limits", "set", "--scope", "team", "--subject", "X", "--rpm", "2"),
                cli(proc, "budgets", "set", "--scope", "tag", "--subject", "feature=search", "--cap", "1",
                    "--period", "day"),
                cli(proc, "budgets", "set", "--scope", "tag", "--subject", "feature=search", "--cap", "1",
                    "--period", "year")]
        set_limit, set_budget, bad = (finished(p) for p in runs)
        assert set_limit.returncode == 0, set_limit.stderr
        assert set_limit.stdout.strip() == "limit set: team X: rpm 2, tpm -"
        assert set_budget.returncode == 0, set_budget.stderr
        assert set_budget.stdout.strip() == "budget set: tag feature=search: $1 per day"
        assert_one_line_error(bad, "period")

        runs = [cli(proc, "limits", "list", "--json"), cli(proc, "budgets", "list")]
        limits, budgets = (finished(p) for p in runs)
        assert limits.returncode == 0, limits.stderr
        assert [{k: d[k] for k in ("scope", "subject", "rpm", "tpm", "source", "updated_by")}
                for d in json.loads(limits.stdout)] == [
            {"scope": "team", "subject": "X", "rpm": 2, "tpm": None, "source": "runtime", "updated_by": "admin-env"}]
        assert budgets.returncode == 0, budgets.stderr
        row = next(line for line in budgets.stdout.splitlines() if "feature=search" in line)
        assert "tag" in row and "day" in row and "runtime" in row, budgets.stdout

        created = proc.admin("POST", "/admin/keys", json={"name": "x-svc", "team": "X"}).json()
        client = proc.client(created["key"])
        for _ in range(2):
            client.chat.completions.create(model="m", messages=ASK, max_tokens=3)
        with pytest.raises(openai.RateLimitError, match="team 'X'"):
            client.chat.completions.create(model="m", messages=ASK, max_tokens=3)
    finally:
        proc.stop()


async def test_deployment_limit_moves_traffic_to_the_next_deployment_then_refuses(tmp_path: Path) -> None:
    """A deployment at its own RPM is skipped (no breaker penalty); with none left the client gets a 429."""
    with FaultyUpstream("a") as a, FaultyUpstream("b") as b:
        two = route(dep("da", a, "whoami"), dep("db", b, "whoami"), balancer="weighted")
        one = {**route(dep("solo", a, "whoami")), "name": "solo"}
        limits = [{"scope": "deployment", "subject": "da", "rpm": 2}, {"scope": "deployment", "subject": "solo",
                                                                        "rpm": 2}]
        async with gateway(tmp_path, two, one, limits=limits) as client:
            served = []
            for _ in range(8):
                r = await chat(client)
                assert r.status_code == 200, r.text
                served.append(r.json()["choices"][0]["message"]["content"])
            assert served.count("a") <= 2 and served.count("b") >= 6
            assert (await client.get("/admin/engines")).json()["da"]["breaker"] == "closed"
            codes = [(await chat(client, model="solo")).status_code for _ in range(3)]
            assert codes == [200, 200, 429]
            refused = await chat(client, model="solo")
            message = refusal(refused, "rate_limit_exceeded")
            assert "deployment 'solo'" in message and "requests per minute: limit 2" in message, message


async def test_spend_during_a_redis_outage_counts_when_it_returns(upstream: FaultyUpstream, tmp_path: Path,
                                                                  own_redis: RedisServer) -> None:
    """Redis stalls (its data kept) and the gateway serves on local counters (fail-open); when it answers
    again its counters are raised to the ledger's spend, so what was spent meanwhile still counts."""
    state = {"backend": "redis", "redis_url": own_redis.url, "key_prefix": "t", "retry_interval": 0.2,
             "timeout": 0.1, "on_unavailable": "fail-open"}
    budgets = [{"scope": "key", "subject": "admin-env", "period": "day", "cap_usd": 0.06}]
    assert own_redis.proc is not None
    async with gateway(tmp_path, priced(upstream), state=state, budgets=budgets) as client:
        for _ in range(2):
            assert (await ask(client)).status_code == 200  # $0.026 on Redis
        await spent(tmp_path, 2, lambda row: True)
        own_redis.proc.send_signal(signal.SIGSTOP)  # Redis stalls, keeping its data
        try:
            for _ in range(2):
                assert (await ask(client)).status_code == 200  # local counter from the ledger: $0.052
            assert await metric(client, "strata_state_backend_up") == 0.0
            await spent(tmp_path, 4, lambda row: True)
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
        await asyncio.sleep(0.3)
        refused = await ask(client)  # Redis knew $0.026; with the outage's spend it is $0.052 + $0.013 > cap
        assert refused.status_code == 429, refused.text
        assert await metric(client, "strata_state_backend_up") == 1.0
        assert await spent(tmp_path, 5, lambda row: True) == pytest.approx(4 * COST)


async def test_a_gateway_killed_mid_request_does_not_shrink_the_budget_for_good(upstream: FaultyUpstream,
                                                                               tmp_path: Path, prefix: str) -> None:
    """A replica SIGKILLed while a request holds a reservation never settles it; the hold expires after
    ``state.reservation_ttl`` and the other replica can spend that money again."""
    config = {
        "routes": [{"name": "m", "deployments": [
            {"name": "d", "engine": {"type": "openai", "base_url": upstream.base_url, "model": "ok"},
             "price": PRICE}]},
            {"name": "stall", "deployments": [
                {"name": "s", "engine": {"type": "openai", "base_url": upstream.base_url, "model": "stall"},
                 "price": PRICE}]}],
        "database": {"url": f"sqlite:///{tmp_path / 'strata.db'}"},
        "state": {**shared_redis(prefix), "reservation_ttl": 2.0},
        "budgets": [{"scope": "key", "subject": "*", "period": "day", "cap_usd": 1.5 * COST}],
    }
    doomed, survivor = (StrataProcess(tmp_path / name, config) for name in ("a", "b"))
    try:
        doomed.start(ready_timeout=60)
        survivor.start(ready_timeout=60)
        async with httpx.AsyncClient(timeout=30) as http:
            def post(p: StrataProcess, model: str) -> Any:
                return http.post(p.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                 json={"model": model, "messages": ASK, "max_tokens": 3})

            hits = upstream.hits
            held = asyncio.create_task(post(doomed, "stall"))
            await eventually(lambda: upstream.hits > hits, "the stalled request to hold its reservation")
            doomed.stop(signal.SIGKILL)
            await asyncio.gather(held, return_exceptions=True)
            assert (await post(survivor, "m")).status_code == 429  # the dead replica's hold still counts
            await asyncio.sleep(2.2)
            assert (await post(survivor, "m")).status_code == 200  # released when it expired
    finally:
        doomed.stop(signal.SIGKILL)
        survivor.stop()
