"""Every error status a client can get, with OpenAI's error body (in-process gateway)."""

from __future__ import annotations

import httpx
import pytest

CHAT = {"model": "ok", "messages": [{"role": "user", "content": "hi"}]}


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


async def test_chat_ok_has_request_id_and_route_name(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post("/v1/chat/completions", json=CHAT)
    assert r.status_code == 200
    assert r.json()["model"] == "ok"
    assert r.headers["x-request-id"].startswith("req_")
    r = await app_client.post("/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "my-trace-1"})
    assert r.headers["x-request-id"] == "my-trace-1"


@pytest.mark.parametrize("auth", ["", "Bearer sk-strata-nope", "Basic abc"])
async def test_missing_or_bad_key_is_401(app_client: httpx.AsyncClient, auth: str) -> None:
    r = await app_client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": auth})
    assert r.status_code == 401
    assert error_of(r)["type"] == "authentication_error"


async def test_unknown_model_is_404(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    assert r.status_code == 404
    err = error_of(r)
    assert err["code"] == "model_not_found" and err["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "ok"}, "messages"),
        ({"model": "ok", "messages": "hi"}, "messages"),
        ({"model": "ok", "messages": []}, "messages"),
        ({"model": "ok", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({**CHAT, "max_tokens": "ten"}, "max_tokens"),
        ({**CHAT, "temperature": 7}, "temperature"),
        ({**CHAT, "stream": "yes please"}, "stream"),
        ({"messages": CHAT["messages"]}, "model"),
    ],
)
async def test_invalid_body_names_the_field(app_client: httpx.AsyncClient, body: dict, param: str) -> None:
    r = await app_client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = error_of(r)
    assert err["type"] == "invalid_request_error"
    assert err["param"] == param
    assert param.split("[")[0] in err["message"]


async def test_empty_prompt_list_is_400_before_any_engine(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post("/v1/completions", json={"model": "ok", "prompt": []})
    assert r.status_code == 400, r.text
    assert (error_of(r)["type"], error_of(r)["param"]) == ("invalid_request_error", "prompt")


async def test_malformed_json_is_400(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post("/v1/chat/completions", content=b'{"model": "ok", "messages": [',
                              headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert "JSON" in error_of(r)["message"]


async def test_max_tokens_beyond_context_is_400(app_client: httpx.AsyncClient) -> None:
    r = await app_client.post("/v1/chat/completions", json={**CHAT, "model": "small", "max_tokens": 5000})
    assert r.status_code == 400
    err = error_of(r)
    assert err["param"] == "max_tokens" and err["code"] == "context_length_exceeded"


async def test_oversized_body_is_413(app_client: httpx.AsyncClient) -> None:
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    r = await app_client.post("/v1/chat/completions", json=big)
    assert r.status_code == 413
    assert error_of(r)["code"] == "request_too_large"


@pytest.mark.parametrize(("model", "status"), [("err500", 502), ("stall", 504), ("down", 503), ("die", 502)])
async def test_upstream_failures_map_to_5xx(app_client: httpx.AsyncClient, model: str, status: int) -> None:
    r = await app_client.post("/v1/chat/completions", json={**CHAT, "model": model})
    assert r.status_code == status, r.text
    assert error_of(r)["type"] == "upstream_error"


async def test_unknown_path_is_openai_shaped_404(app_client: httpx.AsyncClient) -> None:
    r = await app_client.get("/v1/nothing-here")
    assert r.status_code == 404
    error_of(r)


@pytest.mark.parametrize(("method", "path", "auth"), [
    ("GET", "/v1/nothing-here", True), ("DELETE", "/v1/models", True), ("GET", "/admin/keys", False),
    ("GET", "/healthz", False),
])
async def test_every_response_carries_a_request_id(app_client: httpx.AsyncClient, method: str, path: str,
                                                   auth: bool) -> None:
    headers = {} if auth else {"Authorization": ""}
    r = await app_client.request(method, path, headers=headers)
    assert r.headers["x-request-id"].startswith("req_")
    r = await app_client.request(method, path, headers={**headers, "X-Request-Id": "trace-42"})
    assert r.headers["x-request-id"] == "trace-42"
    r = await app_client.request(method, path, headers={**headers, "X-Request-Id": "bad id with spaces"})
    assert r.headers["x-request-id"].startswith("req_")
