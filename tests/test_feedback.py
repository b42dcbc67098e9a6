"""``POST /v1/feedback``: a score on a served request lands with the deployment that served it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from strata.store.tables import Feedback
from tests.servers import ADMIN_KEY, table_rows

CHAT = {"model": "ok", "messages": [{"role": "user", "content": "hi"}]}


def stored(data_dir: Path) -> list[dict]:
    return table_rows(data_dir, Feedback.__table__)  # type: ignore[arg-type]


async def new_key(client: httpx.AsyncClient, team: str) -> str:
    return (await client.post("/admin/keys", json={"name": team, "team": team})).json()["key"]


async def test_feedback_is_attributed_to_the_serving_deployment(app_client: httpx.AsyncClient,
                                                                tmp_path: Path) -> None:
    key = await new_key(app_client, "search")
    auth = {"Authorization": f"Bearer {key}"}
    r = await app_client.post("/v1/chat/completions", json=CHAT, headers=auth)
    rid = r.headers["x-request-id"]
    r = await app_client.post("/v1/feedback", json={"request_id": rid, "score": 1, "comment": "great"}, headers=auth)
    assert r.status_code == 200, r.text
    assert (r.json()["route"], r.json()["deployment"], r.json()["score"]) == ("ok", "ok-dep", 1.0)
    await asyncio.sleep(0.3)  # the ledger row is written by now; feedback must still find it
    r = await app_client.post("/v1/feedback", json={"request_id": rid, "score": 0.2, "name": "judge"}, headers=auth)
    assert r.status_code == 200, r.text
    rows = stored(tmp_path)
    assert [(f["request_id"], f["deployment"], f["name"], f["score"]) for f in rows] == [
        (rid, "ok-dep", "user", 1.0), (rid, "ok-dep", "judge", 0.2)]


async def test_feedback_on_someone_elses_or_unknown_request_is_404(app_client: httpx.AsyncClient,
                                                                   tmp_path: Path) -> None:
    owner, other = await new_key(app_client, "a"), await new_key(app_client, "b")
    rid = (await app_client.post("/v1/chat/completions", json=CHAT,
                                 headers={"Authorization": f"Bearer {owner}"})).headers["x-request-id"]
    for key, request_id in ((other, rid), (owner, "req_does_not_exist")):
        r = await app_client.post("/v1/feedback", json={"request_id": request_id, "score": 1},
                                  headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"
    r = await app_client.post("/v1/feedback", json={"request_id": rid, "score": 1},
                              headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, "an admin may score any request"
    assert len(stored(tmp_path)) == 1


@pytest.mark.parametrize("body", [{"score": 1}, {"request_id": "x"}, {"request_id": "x", "score": "good"},
                                  {"request_id": "x", "score": 1, "extra": True}])
async def test_invalid_feedback_is_400(app_client: httpx.AsyncClient, body: dict) -> None:
    r = await app_client.post("/v1/feedback", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
