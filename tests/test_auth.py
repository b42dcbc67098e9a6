"""API keys through the admin API and the gateway: creation, route scoping, revocation, attribution."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from strata.governance.keys import KeyStore, hash_key
from strata.store.db import open_database

CHAT = {"model": "ok", "messages": [{"role": "user", "content": "hi"}]}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def create_key(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/admin/keys", json={"name": "svc", "team": "search", **body})
    assert r.status_code == 200, r.text
    return r.json()


async def chat(client: httpx.AsyncClient, secret: str, body: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={**CHAT, **(body or {})},
                             headers={**bearer(secret), **(headers or {})})


async def wait_for_usage(client: httpx.AsyncClient, by: str, group: str) -> dict[str, Any]:
    """Poll the usage report until ``group`` shows up (the ledger writer flushes every 0.25 s)."""
    for _ in range(100):
        r = await client.get("/admin/usage", params={"by": by, "since": "1h"})
        assert r.status_code == 200, r.text
        groups = {g["group"]: g for g in r.json()["groups"]}
        if group in groups:
            return groups[group]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no usage for {by}={group!r} after 5 s: {r.json()}")


async def test_created_key_works_and_is_shown_once(app_client: httpx.AsyncClient) -> None:
    created = await create_key(app_client)
    assert created["key"].startswith("sk-strata-")
    assert created["team"] == "search" and not created["revoked"] and not created["admin"]
    r = await chat(app_client, created["key"])
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


async def test_key_scoped_to_routes(app_client: httpx.AsyncClient) -> None:
    secret = (await create_key(app_client, allowed_routes=["ok"]))["key"]
    assert (await chat(app_client, secret)).status_code == 200
    r = await chat(app_client, secret, body={"model": "slow"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "model_not_allowed"
    models = await app_client.get("/v1/models", headers=bearer(secret))
    assert [m["id"] for m in models.json()["data"]] == ["ok"]
    everything = await app_client.get("/v1/models")
    assert {"ok", "slow", "err500"} <= {m["id"] for m in everything.json()["data"]}


async def test_revoke_via_admin_api_applies_to_next_request(app_client: httpx.AsyncClient) -> None:
    created = await create_key(app_client)
    assert (await chat(app_client, created["key"])).status_code == 200
    r = await app_client.delete(f"/admin/keys/{created['id']}")
    assert r.status_code == 200 and r.json()["revoked"] is True
    r = await chat(app_client, created["key"])
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "revoked_api_key"


async def test_expired_key_is_rejected(app_client: httpx.AsyncClient) -> None:
    created = await create_key(app_client, expires_in_days=2 / 86400)  # two seconds
    assert (await chat(app_client, created["key"])).status_code == 200
    for _ in range(100):
        r = await chat(app_client, created["key"])
        if r.status_code != 200:
            break
        await asyncio.sleep(0.05)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "expired_api_key"


async def test_revoke_unknown_key_is_404(app_client: httpx.AsyncClient) -> None:
    r = await app_client.delete("/admin/keys/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "key_not_found"


async def test_revoke_in_database_applies_within_sync_interval(app_client: httpx.AsyncClient) -> None:
    created = await create_key(app_client)
    assert (await chat(app_client, created["key"])).status_code == 200
    settings = app_client.app.state.strata.settings  # type: ignore[attr-defined]
    cli_db = open_database(settings.database_url)  # what `strata keys revoke` does, next to the server
    try:
        KeyStore(cli_db).revoke(created["id"])
    finally:
        cli_db.dispose()
    for _ in range(100):
        r = await chat(app_client, created["key"])
        if r.status_code != 200:
            break
        await asyncio.sleep(0.05)
    assert r.status_code == 401, "revoked key still accepted after 5 s"


async def test_key_created_in_database_works_at_once(app_client: httpx.AsyncClient) -> None:
    settings = app_client.app.state.strata.settings  # type: ignore[attr-defined]
    cli_db = open_database(settings.database_url)
    try:
        secret = KeyStore(cli_db).create("cli-made", team="ops").secret
    finally:
        cli_db.dispose()
    assert (await chat(app_client, secret)).status_code == 200


async def test_non_admin_key_cannot_use_admin_api(app_client: httpx.AsyncClient) -> None:
    secret = (await create_key(app_client))["key"]
    for method, path in [("GET", "/admin/keys"), ("POST", "/admin/keys"), ("GET", "/admin/usage"),
                         ("DELETE", "/admin/keys/x")]:
        r = await app_client.request(method, path, headers=bearer(secret), json={"name": "x"})
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["error"]["type"] == "permission_error"


async def test_created_admin_key_can_use_admin_api(app_client: httpx.AsyncClient) -> None:
    secret = (await create_key(app_client, admin=True))["key"]
    r = await app_client.get("/admin/keys", headers=bearer(secret))
    assert r.status_code == 200


async def test_list_never_shows_secrets(app_client: httpx.AsyncClient) -> None:
    created = await create_key(app_client, allowed_routes=["ok"], expires_in_days=1)
    r = await app_client.get("/admin/keys")
    assert r.status_code == 200
    (listed,) = r.json()["data"]
    assert listed["id"] == created["id"] and listed["allowed_routes"] == ["ok"] and listed["expires_at"]
    assert "key" not in listed and "key_hash" not in listed
    assert created["key"] not in r.text and hash_key(created["key"]) not in r.text
    assert created["key"].startswith(listed["prefix"])


@pytest.mark.parametrize("body", [{}, {"name": ""}, {"name": "x", "expires_in_days": -1},
                                  {"name": "x", "allowed_routes": "ok"}, {"name": "x", "bogus": 1},
                                  {"name": "x", "allowed_routes": ["ok", "no-such-route"]}])
async def test_invalid_key_request_is_400(app_client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    r = await app_client.post("/admin/keys", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert (await app_client.get("/admin/keys")).json()["data"] == []


async def test_tags_and_user_are_attributed(app_client: httpx.AsyncClient) -> None:
    created = await create_key(app_client, team="growth")
    r = await chat(app_client, created["key"], body={"user": "alice"},
                   headers={"X-Strata-Tags": "feature=search,tier=pro"})
    assert r.status_code == 200, r.text
    feature = await wait_for_usage(app_client, "tag:feature", "search")
    assert feature["requests"] == 1
    assert (feature["prompt_tokens"], feature["completion_tokens"]) == (7, 3)
    assert feature["cost_usd"] == pytest.approx(7e-6 + 3 * 2e-6)
    assert (await wait_for_usage(app_client, "tag:tier", "pro"))["requests"] == 1
    assert (await wait_for_usage(app_client, "user", "alice"))["requests"] == 1
    assert (await wait_for_usage(app_client, "team", "growth"))["requests"] == 1
    assert (await wait_for_usage(app_client, "key", created["id"]))["requests"] == 1


@pytest.mark.parametrize("header", ["feature", "feature=", "feature=a b", "a=1,,b=2", "=x"])
async def test_malformed_tags_are_400(app_client: httpx.AsyncClient, header: str) -> None:
    r = await app_client.post("/v1/chat/completions", json=CHAT, headers={"X-Strata-Tags": header})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "X-Strata-Tags"


@pytest.mark.parametrize(("params", "param"), [
    ({"since": "7x"}, "since"), ({"since": "1000000d"}, "since"), ({"by": "colour"}, "by"),
])
async def test_bad_usage_query_is_400(app_client: httpx.AsyncClient, params: dict[str, str], param: str) -> None:
    r = await app_client.get("/admin/usage", params=params)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param
