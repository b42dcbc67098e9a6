"""Roles and least privilege: every operation in /openapi.json against keys of every role with random scopes,
through the in-process app, must match the authorisation table (``gateway.authz.RULES``); plus the team and
route scopes doing what a user would notice."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from strata.app import create_app
from strata.config.settings import load_settings
from strata.errors import PermissionDenied
from strata.gateway.admin import CreateKey, grantable
from strata.gateway.authz import RULES, rule_for
from strata.governance.keys import Principal
from strata.governance.roles import PERMISSIONS, ROLES, Scopes
from strata.store.db import open_database
from tests.conftest import fault_routes
from tests.upstreams import FaultyUpstream

TEAMS = ["search", "ads", "default"]
ROUTES = ["ok", "slow", "err500"]
PARAMS = {"key_id": "no-such-key", "trace_id": "0" * 32, "deployment": "no-such-dep", "response_id": "resp_nope",
          "model": "ok"}
HI = {"model": "ok", "messages": [{"role": "user", "content": "hi"}]}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def make_key(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/admin/keys", json={"name": "k", "team": "search", **body})
    assert r.status_code == 200, r.text
    return r.json()


async def openapi_operations(client: httpx.AsyncClient) -> list[tuple[str, str]]:
    doc = (await client.get("/openapi.json")).json()
    return sorted((m.upper(), p) for p, ops in doc["paths"].items() for m in ops)


def random_scopes(rng: random.Random) -> dict[str, list[str]] | None:
    scopes: dict[str, list[str]] = {}
    if rng.random() < 0.5:
        scopes["teams"] = rng.sample(TEAMS, rng.randint(1, 2))
    if rng.random() < 0.5:
        scopes["routes"] = rng.sample(ROUTES, rng.randint(1, 2))
    return scopes or None


def expected(role: str, scopes: Scopes, method: str, path: str, route: str) -> bool:
    """Allowed, from the table alone (not from the handlers)."""
    rule = RULES[(method, path)]
    if rule.permission is None:
        return True
    if rule.permission not in PERMISSIONS[role]:
        return False
    if rule.scope == "global":
        return scopes.teams is None
    if rule.scope == "routes":
        return scopes.route_ok(route)
    return True


async def test_every_operation_has_a_rule(app_client: httpx.AsyncClient) -> None:
    """A new endpoint without a rule in gateway.authz.RULES fails here (and is refused by ``guarded``)."""
    missing = [f"{m} {p}" for m, p in await openapi_operations(app_client) if (m, p) not in RULES]
    assert missing == [], "add these operations to strata.gateway.authz.RULES"
    assert rule_for("GET", "/admin/not-in-the-table") is None


async def test_rbac_matrix_over_every_operation(app_client: httpx.AsyncClient) -> None:
    """Keys of every role with seeded random scopes; every operation of /openapi.json; bodies that stop at
    validation, so an allowed call answers 400/404/200 without changing anything and a denied one 403."""
    rng = random.Random(13)
    keys = []
    for role in ROLES:
        for _ in range(3):
            scopes = random_scopes(rng)
            created = await make_key(app_client, role=role, scopes=scopes, team=rng.choice(TEAMS))
            keys.append((role, Scopes.of(scopes), created["key"]))
    ops = await openapi_operations(app_client)
    checked = 0
    for role, scopes, secret in keys:
        for method, template in ops:
            route = rng.choice(ROUTES)
            path = template.replace("{route}", route)
            for name, value in PARAMS.items():
                path = path.replace(f"{{{name}}}", value)
            body = {"name": ""} if method in ("POST", "PUT", "PATCH") else None
            r = await app_client.request(method, path, json=body, headers=bearer(secret))
            allowed = expected(role, scopes, method, template, route)
            what = f"{role} {scopes} {method} {path}: {r.status_code} {r.text[:200]}"
            if allowed:
                assert r.status_code not in (401, 403) and r.status_code < 500, what
            else:
                assert r.status_code == 403, what
                error = r.json()["error"]
                assert error["type"] == "permission_error", what
                permission = RULES[(method, template)].permission
                assert permission in error["message"] or error["code"] == "scope_denied", what
            checked += 1
    assert checked == len(keys) * len(ops)
    guarded_ops = [op for op in ops if RULES[op].permission is not None and op[1].startswith("/admin")]
    for method, template in rng.sample(guarded_ops, 10):  # without a key: 401 (a sample: failed logins lock out)
        path = template.replace("{route}", "ok")
        for name, value in PARAMS.items():
            path = path.replace(f"{{{name}}}", value)
        r = await app_client.request(method, path, headers={"Authorization": ""})
        assert r.status_code == 401, f"{method} {path}: {r.status_code}"


async def test_member_key_cannot_reach_admin(app_client: httpx.AsyncClient) -> None:
    secret = (await make_key(app_client, role="member"))["key"]
    for method, path in await openapi_operations(app_client):
        if path.startswith("/admin"):
            concrete = path.replace("{route}", "ok").replace("{key_id}", "x").replace("{trace_id}", "x")
            concrete = concrete.replace("{deployment}", "x")
            r = await app_client.request(method, concrete, headers=bearer(secret))
            assert r.status_code == 403, f"{method} {concrete}"
            assert "permission" in r.json()["error"]["message"]
    assert (await app_client.post("/v1/chat/completions", json=HI, headers=bearer(secret))).status_code == 200


async def wait_for_groups(client: httpx.AsyncClient, secret: str, by: str, want: set[str]) -> dict[str, Any]:
    for _ in range(100):
        r = await client.get("/admin/usage", params={"by": by, "since": "1h"}, headers=bearer(secret))
        assert r.status_code == 200, r.text
        if {g["group"] for g in r.json()["groups"]} >= want:
            return r.json()
        await asyncio.sleep(0.05)
    raise AssertionError(f"usage never showed {want}: {r.json()}")


async def test_team_scoped_analyst_sees_only_its_team(app_client: httpx.AsyncClient) -> None:
    search = await make_key(app_client, team="search")
    ads = await make_key(app_client, team="ads")
    for key in (search, ads):
        assert (await app_client.post("/v1/chat/completions", json=HI, headers=bearer(key["key"]))).status_code == 200
    analyst = (await make_key(app_client, role="analyst", scopes={"teams": ["search"]}))["key"]
    admin_view = await app_client.get("/admin/usage", params={"by": "team", "since": "1h"})
    for _ in range(100):  # the ledger writer flushes every 0.25 s
        if {g["group"] for g in admin_view.json()["groups"]} >= {"search", "ads"}:
            break
        await asyncio.sleep(0.05)
        admin_view = await app_client.get("/admin/usage", params={"by": "team", "since": "1h"})
    report = await wait_for_groups(app_client, analyst, "team", {"search"})
    assert [g["group"] for g in report["groups"]] == ["search"]
    by_key = (await app_client.get("/admin/usage", params={"by": "key", "since": "1h"},
                                   headers=bearer(analyst))).json()
    assert {g["group"] for g in by_key["groups"]} == {search["id"]}
    cost = (await app_client.get("/admin/cost", params={"by": "team", "since": "1h"}, headers=bearer(analyst))).json()
    assert {g["group"] for g in cost["groups"]} == {"search"}
    r = await app_client.get("/admin/keys", headers=bearer(analyst))
    assert r.status_code == 403 and "'keys.read'" in r.json()["error"]["message"]


async def test_team_admin_stays_in_its_team(app_client: httpx.AsyncClient) -> None:
    theirs = await make_key(app_client, team="ads")
    team_admin = (await make_key(app_client, role="admin", scopes={"teams": ["search"]}))["key"]
    ours = await make_key(app_client, team="search")
    listed = (await app_client.get("/admin/keys", headers=bearer(team_admin))).json()["data"]
    assert listed and {k["team"] for k in listed} == {"search"} and ours["id"] in {k["id"] for k in listed}
    r = await app_client.post("/admin/keys", json={"name": "x", "team": "ads"}, headers=bearer(team_admin))
    assert r.status_code == 403 and r.json()["error"]["code"] == "scope_denied"
    r = await app_client.post("/admin/keys", json={"name": "x", "team": "search", "role": "admin",
                                                   "scopes": {"teams": ["search", "ads"]}}, headers=bearer(team_admin))
    assert r.status_code == 403, r.text
    made = await app_client.post("/admin/keys", json={"name": "x", "team": "search", "role": "admin"},
                                 headers=bearer(team_admin))
    assert made.status_code == 200 and made.json()["scopes"] == {"teams": ["search"]}  # never an unscoped admin
    r = await app_client.delete(f"/admin/keys/{theirs['id']}", headers=bearer(team_admin))
    assert r.status_code == 404  # another team's key does not exist for this key
    assert (await app_client.delete(f"/admin/keys/{ours['id']}", headers=bearer(team_admin))).status_code == 200
    r = await app_client.put("/admin/budgets", json={"scope": "team", "subject": "ads", "cap_usd": 1},
                             headers=bearer(team_admin))
    assert r.status_code == 403
    r = await app_client.put("/admin/budgets", json={"scope": "team", "subject": "search", "cap_usd": 1},
                             headers=bearer(team_admin))
    assert r.status_code == 200, r.text
    assert (await app_client.put("/admin/budgets", json={"scope": "team", "subject": "ads", "cap_usd": 2})
            ).status_code == 200
    seen = (await app_client.get("/admin/budgets", headers=bearer(team_admin))).json()["data"]
    assert [(b["scope"], b["subject"]) for b in seen] == [("team", "search")]


async def test_route_scoped_operator_changes_only_its_route(app_client: httpx.AsyncClient) -> None:
    operator = await make_key(app_client, role="operator", scopes={"routes": ["ok"]})
    assert operator["role"] == "operator"
    r = await app_client.patch("/admin/routes/slow", json={"retries": 1}, headers=bearer(operator["key"]))
    assert r.status_code == 403 and r.json()["error"]["code"] == "scope_denied"
    assert "'slow'" in r.json()["error"]["message"]
    r = await app_client.patch("/admin/routes/ok", json={"retries": 1}, headers=bearer(operator["key"]))
    assert r.status_code == 200, r.text
    assert (await app_client.get("/admin/routes/slow", headers=bearer(operator["key"]))).status_code == 200
    assert (await app_client.get("/admin/keys", headers=bearer(operator["key"]))).status_code == 403


def test_a_key_cannot_grant_more_than_it_has() -> None:
    operator = Principal("k", "op", "search", None, False, role="operator", scopes=Scopes(frozenset({"search"})))
    with pytest.raises(PermissionDenied, match="higher role"):
        grantable(operator, CreateKey(name="x", team="search", role="admin"))
    assert grantable(operator, CreateKey(name="x", team="search", role="analyst")) == (
        "analyst", Scopes(frozenset({"search"})))
    with pytest.raises(PermissionDenied, match="contradicts"):
        grantable(operator, CreateKey(name="x", team="search", role="member", admin=True))


def test_keys_made_before_roles_keep_their_meaning() -> None:
    assert Principal("a", "old-admin", "t", None, True).role == "admin"
    assert Principal("m", "old-key", "t", None, False).role == "member"
    assert Principal("o", "op", "t", None, True, role="operator").is_admin is False


async def test_cli_made_analyst_key_works(upstream: FaultyUpstream, tmp_path: Path) -> None:
    open_database(f"sqlite:///{tmp_path / 'strata.db'}").dispose()
    p = subprocess.run([sys.executable, "-m", "strata", "keys", "create", "viewer", "--role", "analyst",
                        "--scope", "team:x", "--data-dir", str(tmp_path), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    created = json.loads(p.stdout)
    assert created["role"] == "analyst" and created["scopes"] == {"teams": ["x"]}
    p = subprocess.run([sys.executable, "-m", "strata", "keys", "create", "bad", "--scope", "tem:x",
                        "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "team:NAME" in p.stderr
    settings = load_settings(None, data_dir=tmp_path, routes=fault_routes(upstream.base_url))
    app = create_app(settings)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://strata",
            headers=bearer(created["key"])) as client:
        r = await client.get("/admin/usage", params={"since": "1h"})
        assert r.status_code == 200 and r.json()["groups"] == []
        assert (await client.get("/admin/keys")).status_code == 403
        assert (await client.post("/v1/chat/completions", json=HI)).status_code == 200


async def test_team_scoped_analyst_sees_only_its_teams_traces(app_client: httpx.AsyncClient) -> None:
    rids = {}
    for team in ("search", "ads"):
        key = (await make_key(app_client, team=team))["key"]
        r = await app_client.post("/v1/chat/completions", json=HI, headers=bearer(key))
        rids[team] = r.headers["x-request-id"]
    for _ in range(60):  # the exporter hands traces to the store every second
        listed = (await app_client.get("/admin/traces")).json()["data"]
        if set(rids.values()) <= {t["request_id"] for t in listed}:
            break
        await asyncio.sleep(0.1)
    analyst = (await make_key(app_client, role="analyst", scopes={"teams": ["search"]}))["key"]
    mine = (await app_client.get("/admin/traces", headers=bearer(analyst))).json()["data"]
    assert [t["request_id"] for t in mine] == [rids["search"]]
    assert (await app_client.get(f"/admin/traces/{rids['search']}", headers=bearer(analyst))).status_code == 200
    r = await app_client.get(f"/admin/traces/{rids['ads']}", headers=bearer(analyst))
    assert r.status_code == 404 and r.json()["error"]["code"] == "trace_not_found"
