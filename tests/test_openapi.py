"""``/openapi.json``: public, valid OpenAPI 3.1, in step with the routes served, and fuzzed without a 5xx."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from openapi_spec_validator import validate
from schemathesis import GenerationMode

from strata.gateway.openapi import operations
from tests.servers import ADMIN_KEY, StrataProcess, openai_route
from tests.upstreams import FaultyUpstream

MAX_EXAMPLES = int(os.environ.get("STRATA_FUZZ_EXAMPLES", "20"))  # per operation and mode: ~30 s


async def test_document_is_public_valid_and_matches_the_routes(app_client: httpx.AsyncClient) -> None:
    resp = await app_client.get("/openapi.json", headers={"Authorization": ""})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    doc = resp.json()
    validate(doc)  # raises on an invalid OpenAPI document
    served = set(operations(app_client.app.routes))  # type: ignore[attr-defined]
    documented = {(m.upper(), p) for p, ms in doc["paths"].items() for m in ms}
    assert served == documented
    undocumented = sorted(f"{m.upper()} {p}" for p, ms in doc["paths"].items() for m, op in ms.items()
                          if op["summary"] == "Undocumented")
    assert undocumented == [], "add these to strata.gateway.openapi.OPERATIONS"
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatRequest"}
    assert "messages" in doc["components"]["schemas"]["ChatRequest"]["required"]
    assert doc["paths"]["/healthz"]["get"]["security"] == []


@pytest.fixture(scope="module")
def fuzz_strata(upstream: FaultyUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    """A gateway of its own (fuzzing creates keys, rules and deployments), with one healthy route."""
    proc = StrataProcess(tmp_path_factory.mktemp("fuzz-strata"), {"routes": [openai_route("ok", upstream.base_url,
                                                                                         "ok")]})
    proc.start(ready_timeout=60)
    yield proc
    proc.stop()


def fuzzable(doc: dict[str, Any], upstream_url: str) -> dict[str, Any]:
    """The served document, narrowed so fuzzing reaches the handlers: the one route, its deployment,
    and remote (openai) engines only, so no fuzzed deployment starts a local model."""
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    for name in ("ChatRequest", "CompletionRequest", "EmbeddingRequest"):
        schemas[name]["properties"]["model"] = {"const": "ok"}
    engine = {"type": "object", "required": ["type", "base_url", "model"], "additionalProperties": False,
              "properties": {"type": {"const": "openai"}, "base_url": {"const": upstream_url},
                             "model": {"type": "string"}, "read_timeout": {"type": "number"}}}
    schemas["DeploymentConfig"]["properties"]["engine"] = engine
    schemas["DeploymentConfig"]["properties"]["name"] = {"enum": ["ok-dep", "ok-new"]}
    for path, ops in doc["paths"].items():
        if path.endswith(("/canary", "/shadow")) and "post" in ops:
            body = ops["post"]["requestBody"]["content"]["application/json"]["schema"]
            body["properties"]["engine"] = {**engine, "required": []}
        for op in ops.values():
            for p in op.get("parameters", []):
                if p["name"] == "route":
                    p["schema"] = {"enum": ["ok", "nope"]}
                elif p["name"] == "deployment":
                    p["schema"] = {"enum": ["ok-dep", "ok-new"]}
    return doc


def test_fuzzing_every_operation_gets_no_5xx(fuzz_strata: StrataProcess, upstream: FaultyUpstream) -> None:
    """Valid and invalid inputs (schemathesis, positive and negative) to every operation, as the admin:
    none may get a 5xx (only /readyz's documented 503), and every 4xx is an OpenAI-shaped error."""
    served = requests.get(fuzz_strata.url + "/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(fuzzable(served, upstream.base_url))
    failures: list[str] = []
    calls = 0
    for operation in (r.ok() for r in schema.get_all_operations()):
        for mode in GenerationMode:
            calls += _fuzz(operation, mode, fuzz_strata.url, failures)
    assert failures == [], "\n".join(failures)
    assert calls > 200, calls


def _fuzz(operation: Any, mode: GenerationMode, url: str, failures: list[str]) -> int:
    calls = 0

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        resp = case.call(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
        where = f"{case.method} {case.formatted_path} -> {resp.status_code} ({mode} body {str(case.body)[:300]})"
        if resp.status_code >= 500 and not (case.path == "/readyz" and resp.status_code == 503):
            failures.append(f"{where}: {resp.text[:300]}")
        elif resp.status_code >= 400 and not _openai_error(resp):
            failures.append(f"{where}: not an OpenAI-shaped error: {resp.text[:300]}")

    with contextlib.suppress(Unsatisfiable):  # negative mode: nothing to break in an operation without inputs
        run()
    return calls


def _openai_error(resp: requests.Response) -> bool:
    try:
        error = resp.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)


@pytest.mark.parametrize("method, path, body, param", [
    ("POST", "/admin/keys", {"name": "ci", "expires_in_days": 1e308}, "expires_in_days"),
    ("POST", "/admin/routes/ok/canary", {"engine": "x", "traffic": 5}, "engine"),
    ("GET", "/admin/routes/ok/shadow?since=99999999999999999999d", None, "since"),
])
async def test_what_fuzzing_found_is_a_400_naming_the_field(app_client: httpx.AsyncClient, method: str, path: str,
                                                           body: dict[str, Any] | None, param: str) -> None:
    """Each of these was a 500 ("Internal error in the admin API") before."""
    resp = await app_client.request(method, path, json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
