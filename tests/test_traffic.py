"""Traffic management as clients see it (in-process gateway, one real upstream per deployment).

Balancing and affinity, retries then fallbacks before the first byte, no retry after it, ejection and
half-open recovery, load shedding, the route deadline, and the metrics an operator watches. Each replica
is a ``FaultyUpstream`` whose ``whoami`` reply names it, so the client can tell which one answered;
``mode`` makes a replica fail (or heal) from the test.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from strata.app import create_app
from strata.config.settings import load_settings
from tests.servers import ADMIN_KEY, StrataProcess, ledger_rows, wait_for
from tests.upstreams import REPLY, FaultyUpstream

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
FAST_RETRY = {"retry_backoff": 0.01}


def dep(name: str, up: FaultyUpstream, model: str = "whoami", engine: dict[str, Any] | None = None,
        **cfg: Any) -> dict[str, Any]:
    return {"name": name, "engine": {"type": "openai", "base_url": up.base_url, "model": model, **(engine or {})},
            **cfg}


def route(*deployments: dict[str, Any], **cfg: Any) -> dict[str, Any]:
    return {"name": "m", "deployments": list(deployments), **cfg}


@asynccontextmanager
async def gateway(data_dir: Path, *routes: dict[str, Any], **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in-process with these routes, lifespan included; the client carries the admin key."""
    settings.setdefault("ledger", {"flush_interval": 0.05})
    app = create_app(load_settings(None, data_dir=data_dir, routes=list(routes), admin_key=ADMIN_KEY, **settings))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://strata", timeout=30,
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            client.app = app  # type: ignore[attr-defined]
            await eventually(lambda: _listed(client, routes), "every deployment in /admin/engines")
            yield client


async def _listed(client: httpx.AsyncClient, routes: tuple[dict[str, Any], ...]) -> bool:
    names = {d["name"] for r in routes for d in r["deployments"]}
    return names <= set(await engines(client))


@asynccontextmanager
async def sdk(client: httpx.AsyncClient) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official SDK talking to the same in-process app."""
    transport = httpx2.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    async with httpx2.AsyncClient(transport=transport, timeout=30) as http:
        yield openai.AsyncOpenAI(base_url="http://strata/v1", api_key=ADMIN_KEY, http_client=http, max_retries=0)


async def chat(client: httpx.AsyncClient, model: str = "m", rid: str | None = None,
               **body: Any) -> httpx.Response:
    headers = {"X-Request-Id": rid} if rid else {}
    return await client.post("/v1/chat/completions", json={"model": model, "messages": HI, **body}, headers=headers)


def served_by(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    content: str = r.json()["choices"][0]["message"]["content"]
    return content


async def eventually(probe: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll ``probe`` (sync or async) without blocking the app's event loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        await asyncio.sleep(0.05)


async def attempts_of(data_dir: Path, rid: str) -> list[tuple[str, str, int]]:
    """The (deployment, outcome, status) of each attempt recorded in the request's ledger row."""
    row = await eventually(lambda: next((r for r in ledger_rows(data_dir) if r["request_id"] == rid), None),
                           f"the ledger row of {rid}")
    attempts = row["attempts"] or []
    assert all(a["ms"] >= 0 for a in attempts), attempts
    return [(a["deployment"], a["outcome"], a["status"]) for a in attempts]


async def engines(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.get("/admin/engines")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()
    return view


async def half_open(client: httpx.AsyncClient, deployment: str) -> bool:
    return bool((await engines(client))[deployment]["breaker"] == "half-open")


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float | None:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def error_code(r: httpx.Response) -> str:
    code: str = r.json()["error"]["code"]
    return code


# --- balancing -------------------------------------------------------------------------------------------


async def serve_many(client: httpx.AsyncClient, total: int, concurrency: int = 10) -> Counter[str]:
    served: Counter[str] = Counter()
    for _ in range(total // concurrency):
        replies = await asyncio.gather(*(chat(client) for _ in range(concurrency)))
        served.update(served_by(r) for r in replies)
    return served


async def test_weighted_balancer_splits_traffic_by_weight(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    r = route(dep("heavy", ups["a"], weight=3), dep("light", ups["b"], weight=1), balancer="weighted")
    async with gateway(tmp_path, r) as client:
        served = await serve_many(client, 400)
    assert sum(served.values()) == 400
    assert 0.65 <= served["a"] / 400 <= 0.85, served
    assert (ups["a"].hits, ups["b"].hits) == (served["a"], served["b"])


async def test_default_balancer_shares_equal_weights_fairly(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    async with gateway(tmp_path, route(dep("one", ups["a"]), dep("two", ups["b"]))) as client:
        served = await serve_many(client, 400)
    assert sum(served.values()) == 400
    assert 0.35 <= served["a"] / 400 <= 0.65, served


async def test_least_outstanding_sends_less_to_a_slow_replica(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """A replica that holds requests longer gets fewer of them; plain weighted random would give it a third."""
    ups["a"].mode = "slow"  # answers REPLY after 0.3 s instead of its name
    served: Counter[str] = Counter()

    async def worker(client: httpx.AsyncClient) -> None:
        for _ in range(10):
            served[served_by(await chat(client))] += 1

    r = route(dep("slowpoke", ups["a"]), dep("quick", ups["b"]), dep("brisk", ups["c"]))
    async with gateway(tmp_path, r) as client:
        await asyncio.gather(*(worker(client) for _ in range(8)))
    assert sum(served.values()) == 80
    assert served[REPLY] / 80 < 0.25, served


# --- retries and fallbacks before the first byte -----------------------------------------------------------


@pytest.mark.parametrize(("mode", "outcome", "status"), [
    ("err500", "bad_gateway", 502),
    ("err429", "rate_limit_exceeded", 429),
    ("die", "bad_gateway", 502),
    ("stall", "upstream_timeout", 504),
])
async def test_failing_primary_is_retried_then_the_fallback_answers(ups: dict[str, FaultyUpstream], tmp_path: Path,
                                                                    mode: str, outcome: str, status: int) -> None:
    ups["a"].mode = mode
    r = route(dep("main", ups["a"], engine={"read_timeout": 0.3}), dep("spare", ups["b"], role="fallback"),
              retries=2, **FAST_RETRY)
    async with gateway(tmp_path, r) as client:
        reply = await chat(client, rid=f"fallback-{mode}")
        assert served_by(reply) == "b"
    assert await attempts_of(tmp_path, f"fallback-{mode}") == [("main", outcome, status)] * 3 + [("spare", "ok", 200)]
    assert ups["a"].hits >= 3


async def test_unreachable_primary_is_retried_then_the_fallback_answers(ups: dict[str, FaultyUpstream],
                                                                        tmp_path: Path) -> None:
    down = {"name": "main", "engine": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "whoami"}}
    async with gateway(tmp_path, route(down, dep("spare", ups["b"], role="fallback"), retries=1,
                                       **FAST_RETRY)) as client:
        assert served_by(await chat(client, rid="down")) == "b"
    assert await attempts_of(tmp_path, "down") == [("main", "engine_unavailable", 503)] * 2 + [("spare", "ok", 200)]


async def test_fallbacks_are_tried_in_config_order(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["a"].mode = ups["b"].mode = "err500"
    r = route(dep("main", ups["a"]), dep("first", ups["b"], role="fallback"), dep("second", ups["c"], role="fallback"),
              retries=0)
    async with gateway(tmp_path, r) as client:
        assert served_by(await chat(client, rid="order")) == "c"
    assert [a[0] for a in await attempts_of(tmp_path, "order")] == ["main", "first", "second"]


async def test_a_retry_goes_to_another_primary(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """With one replica failing, every request still succeeds: the retry picks the untried replica."""
    ups["a"].mode = "err500"
    r = route(dep("sick", ups["a"]), dep("well", ups["b"]), retries=1, breaker={"consecutive_failures": 100},
              **FAST_RETRY)
    async with gateway(tmp_path, r) as client:
        for i in range(20):
            assert served_by(await chat(client, rid=f"untried-{i}")) == "b"
        paths = {tuple(await attempts_of(tmp_path, f"untried-{i}")) for i in range(20)}
    assert paths <= {(("well", "ok", 200),), (("sick", "bad_gateway", 502), ("well", "ok", 200))}, paths
    assert ups["a"].hits > 0, "the failing replica still got its share of first attempts"


async def test_every_attempt_failing_returns_the_last_error(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["a"].mode = ups["b"].mode = "err500"
    async with gateway(tmp_path, route(dep("main", ups["a"]), dep("spare", ups["b"], role="fallback"), retries=1,
                                       **FAST_RETRY)) as client:
        reply = await chat(client, rid="all-fail")
        assert reply.status_code == 502
        assert "upstream exploded" in reply.json()["error"]["message"]
    assert [a[0] for a in await attempts_of(tmp_path, "all-fail")] == ["main", "main", "spare"]


async def test_upstream_rejecting_the_request_is_not_retried(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """A 400 is the client's fault: retrying it elsewhere would only fail again (and cost twice)."""
    ups["a"].mode = "err400"
    async with gateway(tmp_path, route(dep("main", ups["a"]), dep("spare", ups["b"], role="fallback"),
                                       **FAST_RETRY)) as client:
        reply = await chat(client, rid="bad-request")
        assert reply.status_code == 400
        assert reply.json()["error"]["type"] == "invalid_request_error"
    assert await attempts_of(tmp_path, "bad-request") == [("main", "invalid_request_error", 400)]
    assert (ups["a"].hits, ups["b"].hits) == (1, 0)


# --- streaming: retry before the first byte, never after -----------------------------------------------------


async def test_stream_failing_before_first_byte_is_served_by_the_fallback(ups: dict[str, FaultyUpstream],
                                                                          tmp_path: Path) -> None:
    ups["a"].mode = "err500"
    r = route(dep("main", ups["a"], "ok"), dep("spare", ups["b"], "ok", role="fallback"), retries=1, **FAST_RETRY)
    async with gateway(tmp_path, r) as client, sdk(client) as oai:
        stream = await oai.chat.completions.create(model="m", messages=HI, stream=True,
                                                   extra_headers={"X-Request-Id": "stream-fallback"})
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == REPLY
    assert await attempts_of(tmp_path, "stream-fallback") == [("main", "bad_gateway", 502)] * 2 + [
        ("spare", "ok", 200)]


async def test_stream_dying_after_first_byte_ends_with_an_error_and_no_fallback(ups: dict[str, FaultyUpstream],
                                                                                tmp_path: Path) -> None:
    r = route(dep("main", ups["a"], "die"), dep("spare", ups["b"], "ok", role="fallback"), retries=2, **FAST_RETRY)
    received: list[str] = []
    async with gateway(tmp_path, r) as client, sdk(client) as oai:
        with pytest.raises(openai.APIError) as info:
            stream = await oai.chat.completions.create(model="m", messages=HI, stream=True,
                                                       extra_headers={"X-Request-Id": "stream-died"})
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    received.append(chunk.choices[0].delta.content)
    assert not isinstance(info.value, openai.APIConnectionError), info.value
    assert (info.value.type, info.value.code) == ("upstream_error", "bad_gateway")
    assert "".join(received) == "Hello from", "what reached the client before the failure is kept, not replayed"
    assert await attempts_of(tmp_path, "stream-died") == [("main", "bad_gateway", 502)]
    assert ups["b"].hits == 0


# --- ejection and recovery -----------------------------------------------------------------------------------


def ejecting_route(ups: dict[str, FaultyUpstream], cooldown: float, failures: int = 2, **cfg: Any) -> dict[str, Any]:
    return route(dep("main", ups["a"]), dep("spare", ups["b"], role="fallback"), retries=failures - 1,
                 breaker={"consecutive_failures": failures, "cooldown": cooldown}, **FAST_RETRY, **cfg)


async def test_failing_deployment_is_ejected_then_probed_back_in(ups: dict[str, FaultyUpstream],
                                                                 tmp_path: Path) -> None:
    ups["a"].mode = "err500"
    async with gateway(tmp_path, ejecting_route(ups, cooldown=1.0)) as client:
        assert served_by(await chat(client, rid="eject")) == "b"
        view = (await engines(client))["main"]
        assert (view["breaker"], view["ejections"], view["in_flight"]) == ("open", 1, 0)
        hits = ups["a"].hits
        assert served_by(await chat(client, rid="skipped")) == "b"
        assert ups["a"].hits == hits, "an ejected deployment gets no traffic"
        assert await attempts_of(tmp_path, "eject") == [("main", "bad_gateway", 502)] * 2 + [("spare", "ok", 200)]
        assert await attempts_of(tmp_path, "skipped") == [("spare", "ok", 200)]

        ups["a"].mode = None
        await eventually(lambda: half_open(client, "main"), "the cool-down to pass")
        assert served_by(await chat(client, rid="probe")) == "a"
        assert await attempts_of(tmp_path, "probe") == [("main", "ok", 200)]
        view = (await engines(client))["main"]
        assert (view["breaker"], view["ejections"]) == ("closed", 1)
        assert served_by(await chat(client)) == "a"


async def test_failed_probe_ejects_again_and_the_client_never_notices(ups: dict[str, FaultyUpstream],
                                                                      tmp_path: Path) -> None:
    ups["a"].mode = "err500"
    async with gateway(tmp_path, ejecting_route(ups, cooldown=0.3, failures=1)) as client:
        assert served_by(await chat(client)) == "b"
        await eventually(lambda: half_open(client, "main"), "the cool-down to pass")
        assert served_by(await chat(client, rid="failed-probe")) == "b"
        assert await attempts_of(tmp_path, "failed-probe") == [("main", "bad_gateway", 502), ("spare", "ok", 200)]
        view = (await engines(client))["main"]
        assert (view["breaker"], view["ejections"]) == ("open", 2)


async def test_only_deployment_ejected_without_panic_answers_503_with_retry_after(ups: dict[str, FaultyUpstream],
                                                                                  tmp_path: Path) -> None:
    ups["a"].mode = "err500"
    r = route(dep("only", ups["a"]), retries=0, breaker={"consecutive_failures": 1, "cooldown": 30, "panic": False})
    async with gateway(tmp_path, r) as client:
        assert (await chat(client)).status_code == 502
        reply = await chat(client)
    assert reply.status_code == 503
    assert error_code(reply) == "no_healthy_deployment"
    assert 1 <= int(reply.headers["retry-after"]) <= 30
    assert ups["a"].hits == 1


async def test_probe_answered_with_a_client_error_does_not_eject_forever(ups: dict[str, FaultyUpstream],
                                                                         tmp_path: Path) -> None:
    ups["a"].mode = "err500"
    async with gateway(tmp_path, ejecting_route(ups, cooldown=0.3, failures=1)) as client:
        assert served_by(await chat(client)) == "b"
        await eventually(lambda: half_open(client, "main"), "the cool-down to pass")
        ups["a"].mode = "err400"
        assert (await chat(client)).status_code == 400, "the probe reached the upstream, which rejected it"
        ups["a"].mode = None

        async def back_on_main() -> bool:
            return served_by(await chat(client)) == "a"

        await eventually(back_on_main, "the healed deployment to get traffic again", timeout=3)


def test_probe_stream_cut_by_the_client_does_not_eject_forever(ups: dict[str, FaultyUpstream],
                                                               tmp_path: Path) -> None:
    """Through the real server: a client closing a stream is routine, it must not strand a deployment."""
    proc = StrataProcess(tmp_path, {"routes": [ejecting_route(ups, cooldown=0.3, failures=1)]}).start(60)
    try:
        client = proc.client().with_options(timeout=20)

        def served() -> str | None:
            return client.chat.completions.create(model="m", messages=HI).choices[0].message.content

        ups["a"].mode = "err500"
        assert served() == "b"
        wait_for(lambda: proc.admin("GET", "/admin/engines").json()["main"]["breaker"] == "half-open", 5,
                 "the cool-down to pass")
        ups["a"].mode = "stall-stream"
        stream = client.chat.completions.create(model="m", messages=HI, stream=True)
        next(iter(stream))
        stream.close()
        ups["a"].mode = None
        wait_for(lambda: served() == "a", 3, "the healed deployment to get traffic again")
    finally:
        proc.stop()


# --- load shedding -------------------------------------------------------------------------------------------


async def test_full_deployment_sheds_load_with_503_overloaded(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    finished: list[httpx.Response] = []

    async def one() -> None:
        finished.append(await chat(client))

    async with gateway(tmp_path, route(dep("only", ups["a"], "slow", max_in_flight=2))) as client:
        await asyncio.gather(*(one() for _ in range(8)))
        ok = [i for i, r in enumerate(finished) if r.status_code == 200]
        shed = [i for i, r in enumerate(finished) if r.status_code == 503]
        assert len(ok) + len(shed) == 8 and 2 <= len(ok) < 8, [r.status_code for r in finished]
        assert max(shed) < min(ok), "shed requests are answered at once, while the slow ones are still in flight"
        for i in shed:
            assert error_code(finished[i]) == "overloaded"
            assert int(finished[i].headers["retry-after"]) >= 1
        assert ups["a"].hits == len(ok)
        assert (await engines(client))["only"]["in_flight"] == 0
        assert (await chat(client)).status_code == 200, "capacity comes back once requests finish"


async def test_cancelled_request_gives_its_slot_back(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """In-process the request runs in the caller's task, so a caller giving up cancels it mid-attempt."""
    ups["a"].mode = "slow"
    async with gateway(tmp_path, route(dep("only", ups["a"], max_in_flight=1))) as client:
        task = asyncio.create_task(chat(client))
        await eventually(lambda: ups["a"].hits == 1, "the request to reach the upstream")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert (await engines(client))["only"]["in_flight"] == 0
        assert (await chat(client)).status_code == 200


async def test_overflow_spills_to_the_fallback_instead_of_failing(ups: dict[str, FaultyUpstream],
                                                                  tmp_path: Path) -> None:
    ups["a"].mode = "slow"
    r = route(dep("main", ups["a"], max_in_flight=1), dep("spare", ups["b"], role="fallback"))
    async with gateway(tmp_path, r) as client:
        replies = await asyncio.gather(*(chat(client) for _ in range(4)))
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    assert (ups["a"].hits, ups["b"].hits) == (1, 3)


# --- affinity ------------------------------------------------------------------------------------------------


USERS = [f"user-{i}" for i in range(12)]


async def pinned(client: httpx.AsyncClient, user: str, times: int = 1) -> set[str]:
    return {served_by(await chat(client, user=user)) for _ in range(times)}


async def test_affinity_pins_each_user_and_spreads_users(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    r = route(*(dep(n, ups[n]) for n in "abc"), affinity=True)
    async with gateway(tmp_path, r) as client:
        homes = {}
        for user in USERS:
            served = await pinned(client, user, 20)
            assert len(served) == 1, f"{user} was served by {served}"
            homes[user] = served.pop()
        assert len(set(homes.values())) > 1, homes

        headers = {"X-Strata-Affinity": "session-42"}
        by_header = {served_by(await client.post("/v1/chat/completions", headers=headers,
                                                 json={"model": "m", "messages": HI, "user": u})) for u in USERS}
        assert len(by_header) == 1, "the X-Strata-Affinity header pins whatever the user field says"


async def test_affinity_moves_only_the_users_of_a_failed_deployment(ups: dict[str, FaultyUpstream],
                                                                    tmp_path: Path) -> None:
    r = route(*(dep(n, ups[n]) for n in "abc"), affinity=True, retries=1,
              breaker={"consecutive_failures": 1, "cooldown": 60}, **FAST_RETRY)
    async with gateway(tmp_path, r) as client:
        homes = {u: (await pinned(client, u)).pop() for u in USERS}
        lost = homes[USERS[0]]
        ups[lost].mode = "err500"
        after = {u: (await pinned(client, u)).pop() for u in USERS}
    for user in USERS:
        if homes[user] == lost:
            assert after[user] != lost, f"{user} still on the failed deployment"
        else:
            assert after[user] == homes[user], f"{user} moved from {homes[user]} to {after[user]}"


async def test_without_affinity_the_user_field_does_not_pin(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    async with gateway(tmp_path, route(*(dep(n, ups[n]) for n in "abc"))) as client:
        assert len(await pinned(client, "someone", 40)) > 1


# --- deadline ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_deadline_bounds_a_stalled_upstream(ups: dict[str, FaultyUpstream], tmp_path: Path,
                                                  stream: bool) -> None:
    r = route(dep("only", ups["a"], "stall", engine={"read_timeout": 30}), deadline=0.5)
    async with gateway(tmp_path, r) as client:
        reply = await chat(client, rid="deadline", stream=stream)
    assert reply.status_code == 504, reply.text
    assert reply.json()["error"]["type"] == "upstream_error"
    assert error_code(reply) == "deadline_exceeded"
    assert await attempts_of(tmp_path, "deadline") == [("only", "deadline_exceeded", 504)]


async def test_deadline_bounds_all_retries_together(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    """Each attempt times out after 0.3 s; ten retries would take 3.3 s, the 1 s deadline cuts them short."""
    r = route(dep("only", ups["a"], "stall", engine={"read_timeout": 0.3}), retries=10, deadline=1.0, **FAST_RETRY)
    async with gateway(tmp_path, r) as client:
        reply = await chat(client, rid="deadline-retries")
    assert reply.status_code == 504
    assert error_code(reply) in {"deadline_exceeded", "upstream_timeout"}
    attempts = await attempts_of(tmp_path, "deadline-retries")
    assert 2 <= len(attempts) <= 4, attempts


# --- metrics -------------------------------------------------------------------------------------------------


async def test_metrics_show_ejection_and_attempt_outcomes(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["a"].mode = "err500"
    async with gateway(tmp_path, ejecting_route(ups, cooldown=60), supervisor={"health_interval": 0.05}) as client:
        for _ in range(3):
            assert served_by(await chat(client)) == "b"

        async def ejected() -> bool:
            return await metric(client, "strata_deployment_breaker_state", deployment="main") == 2.0

        await eventually(ejected, "the breaker gauge to show the ejection")
        assert await metric(client, "strata_deployment_breaker_state", deployment="spare") == 0.0
        attempts = "strata_upstream_attempts_total"
        assert await metric(client, attempts, deployment="main", outcome="bad_gateway") == 2.0
        assert await metric(client, attempts, deployment="spare", outcome="ok") == 3.0
        assert await metric(client, attempts, deployment="main", outcome="ok") is None
