"""Changing routes at run time: admin API (in-process) and the CLI against a real process."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from strata.app import create_app
from strata.config.settings import load_settings
from tests.servers import ADMIN_KEY, StrataProcess, ledger_rows, openai_route
from tests.upstreams import FaultyUpstream

CHAT = {"model": "ok", "messages": [{"role": "user", "content": "hi"}]}


def second(upstream: FaultyUpstream, **kw: Any) -> dict[str, Any]:
    return {"engine": {"type": "openai", "base_url": upstream.base_url, "model": "ok"}, **kw}


async def _client(upstream: FaultyUpstream, data_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    routes = [openai_route("ok", upstream.base_url, "ok"), openai_route("slow", upstream.base_url, "slow")]
    app = create_app(load_settings(None, data_dir=data_dir, routes=routes, admin_key=ADMIN_KEY))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://strata",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            yield client


@pytest.fixture
async def admin(upstream: FaultyUpstream, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async for client in _client(upstream, tmp_path):
        yield client


async def test_added_deployment_takes_traffic_at_once(admin: httpx.AsyncClient, upstream: FaultyUpstream,
                                                      tmp_path: Path) -> None:
    r = await admin.put("/admin/routes/ok/deployments/ok-b", json=second(upstream, weight=1))
    assert r.status_code == 200, r.text
    assert [d["name"] for d in r.json()["route"]["deployments"]] == ["ok-dep", "ok-b"]
    for _ in range(40):
        assert (await admin.post("/v1/chat/completions", json=CHAT)).status_code == 200
    for _ in range(100):  # the in-process ledger writer flushes every 0.25 s
        if {row["deployment"] for row in ledger_rows(tmp_path)} >= {"ok-dep", "ok-b"}:
            return
        await asyncio.sleep(0.1)
    pytest.fail("the added deployment served no request")


async def test_every_change_is_audited_with_before_and_after(admin: httpx.AsyncClient,
                                                             upstream: FaultyUpstream) -> None:
    await admin.put("/admin/routes/ok/deployments/ok-b", json=second(upstream, weight=2))
    await admin.put("/admin/routes/ok/deployments/ok-b", json=second(upstream, weight=5))
    await admin.delete("/admin/routes/ok/deployments/ok-b")
    changes = (await admin.get("/admin/routes/ok/changes")).json()["data"]
    assert [c["action"] for c in changes] == ["remove_deployment", "update_deployment", "add_deployment"]
    assert {c["actor"] for c in changes} == {"admin-env"}
    update = changes[1]
    assert [d["weight"] for d in update["before"]["deployments"]] == [1.0, 2.0]
    assert [d["weight"] for d in update["after"]["deployments"]] == [1.0, 5.0]


@pytest.mark.parametrize(("method", "path", "body", "status", "needle"), [
    ("DELETE", "/admin/routes/ok/deployments/ok-dep", None, 400, "primary"),
    ("PUT", "/admin/routes/ok/deployments/slow-dep", "second", 400, "already belongs"),
    ("PUT", "/admin/routes/ok/deployments/ok-b", {"engine": {"type": "warp"}}, 400, "engine"),
    ("PUT", "/admin/routes/ok/deployments/ok-b", "fallback-only-new-route", 400, "primary"),
    ("DELETE", "/admin/routes/nope/deployments/x", None, 404, "nope"),
])
async def test_bad_changes_are_refused_and_change_nothing(admin: httpx.AsyncClient, upstream: FaultyUpstream,
                                                          method: str, path: str, body: Any, status: int,
                                                          needle: str) -> None:
    if body == "second":
        body = second(upstream)
    if body == "fallback-only-new-route":
        path, body = "/admin/routes/new/deployments/n1", second(upstream, role="fallback")
    before = (await admin.get("/admin/routes")).json()
    r = await admin.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]
    after = (await admin.get("/admin/routes")).json()
    assert after == before
    assert (await admin.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_route_settings_change_at_run_time_and_bad_ones_change_nothing(admin: httpx.AsyncClient) -> None:
    r = await admin.patch("/admin/routes/ok", json={"retries": 0, "canary": {"max_ttft_ratio": 3}})
    assert r.status_code == 200, r.text
    route = (await admin.get("/admin/routes/ok")).json()
    assert (route["retries"], route["canary"]["max_ttft_ratio"], route["canary"]["min_requests"]) == (0, 3.0, 30)
    for bad, param in (({"retries": -1}, "retries"), ({"canary": {"steps": [50, 10]}}, "canary"),
                       ({"deployments": []}, "deployments"), ({"complexity": {"threshold": 0.3}}, "complexity")):
        r = await admin.patch("/admin/routes/ok", json=bad)
        assert r.status_code == 400, (bad, r.text)
        error = r.json()["error"]
        assert error["param"].startswith(param) or param in error["message"], error
    assert (await admin.get("/admin/routes/ok")).json() == route  # nothing changed
    assert (await admin.post("/v1/chat/completions", json=CHAT)).status_code == 200


async def test_non_admin_keys_cannot_change_routes(admin: httpx.AsyncClient, upstream: FaultyUpstream) -> None:
    key = (await admin.post("/admin/keys", json={"name": "svc"})).json()["key"]
    r = await admin.put("/admin/routes/ok/deployments/ok-b", json=second(upstream),
                        headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 403


async def test_changes_survive_a_restart_until_reset(upstream: FaultyUpstream, tmp_path: Path) -> None:
    async for client in _client(upstream, tmp_path):
        assert (await client.put("/admin/routes/ok/deployments/ok-b", json=second(upstream))).status_code == 200
    async for client in _client(upstream, tmp_path):
        names = [d["name"] for d in (await client.get("/admin/routes/ok")).json()["deployments"]]
        assert names == ["ok-dep", "ok-b"]
        assert (await client.post("/admin/routes/ok/reset")).status_code == 200
    async for client in _client(upstream, tmp_path):
        assert [d["name"] for d in (await client.get("/admin/routes/ok")).json()["deployments"]] == ["ok-dep"]


def test_cli_deploys_shows_and_removes_on_a_running_strata(upstream: FaultyUpstream, tmp_path: Path) -> None:
    proc = StrataProcess(tmp_path, {"routes": [openai_route("ok", upstream.base_url, "ok")]}).start(60)
    try:
        def cli(*args: str) -> str:
            out = subprocess.run([sys.executable, "-m", "strata", *args, "--url", proc.url, "--key", ADMIN_KEY],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            return out.stdout

        cli("deploy", "ok", "ok-b", "--engine", "openai", "--base-url", upstream.base_url, "--model", "ok",
            "--weight", "3")
        cli("deploy", "ok", "ok-b", "--role", "fallback")
        shown = json.loads(cli("routes", "show", "ok", "--json"))
        assert [(d["name"], d["role"], d["weight"]) for d in shown["deployments"]] == [
            ("ok-dep", "primary", 1.0), ("ok-b", "fallback", 3.0)]
        assert proc.client().chat.completions.create(model="ok", messages=CHAT["messages"]).choices
        cli("deploy", "ok", "ok-b", "--remove")
        cli("routes", "set", "ok", "retries=0", "breaker.cooldown=2", "canary.steps=[10,100]")
        shown = json.loads(cli("routes", "show", "ok", "--json"))
        assert (shown["retries"], shown["breaker"]["cooldown"], shown["canary"]["steps"]) == (0, 2.0, [10.0, 100.0])
        assert shown["breaker"]["consecutive_failures"] == 5  # the rest of the breaker is kept
        actions = [c["action"] for c in json.loads(cli("routes", "changes", "ok", "--json"))]
        assert actions == ["update_route", "remove_deployment", "update_deployment", "add_deployment"]
        bad = subprocess.run([sys.executable, "-m", "strata", "deploy", "ok", "ok-dep", "--remove", "--url", proc.url,
                              "--key", ADMIN_KEY], capture_output=True, text=True, timeout=60)
        assert bad.returncode != 0 and bad.stderr.strip().startswith("error:") and "primary" in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1
    finally:
        proc.stop()


async def test_a_change_made_through_one_replica_reaches_the_other(upstream: FaultyUpstream, tmp_path: Path) -> None:
    """Two gateways on one database: a deployment added through the first serves through the second within
    a sync interval, and a reset through the second takes it away on the first."""
    routes = [openai_route("ok", upstream.base_url, "ok")]

    def app() -> Any:
        return create_app(load_settings(None, data_dir=tmp_path, routes=routes, admin_key=ADMIN_KEY,
                                        keys={"sync_interval": 0.1}))

    app_a, app_b = app(), app()
    async with app_a.router.lifespan_context(app_a), app_b.router.lifespan_context(app_b):
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://strata",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) for a in (app_a, app_b)]
        one, two = clients

        async def names(client: httpx.AsyncClient) -> list[str]:
            return [d["name"] for d in (await client.get("/admin/routes/ok")).json()["deployments"]]

        assert (await one.put("/admin/routes/ok/deployments/ok-b", json=second(upstream))).status_code == 200
        for _ in range(50):
            if await names(two) == ["ok-dep", "ok-b"]:
                break
            await asyncio.sleep(0.05)
        assert await names(two) == ["ok-dep", "ok-b"]
        assert (await two.post("/v1/chat/completions", json=CHAT)).status_code == 200
        assert (await two.post("/admin/routes/ok/reset")).status_code == 200
        for _ in range(50):
            if await names(one) == ["ok-dep"]:
                break
            await asyncio.sleep(0.05)
        assert await names(one) == ["ok-dep"]
        for c in clients:
            await c.aclose()

