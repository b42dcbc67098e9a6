"""``GET /openapi.json``: an OpenAPI 3.1 document of Strata's own HTTP API (inference and admin).

It is built once, when the app is created, from the app's Starlette routes and the pydantic models the
handlers validate with (``model_json_schema``), so the document cannot drift from what the gateway
checks; ``tests/test_openapi.py`` asserts every route has an operation here and every operation a route.
It describes the software, not a deployment (no route names, keys or models), so it is served without
auth, like OpenAI's own published spec.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from strata.gateway.admin import CreateKey
from strata.gateway.authz import RULES
from strata.gateway.datasets_admin import CreateDataset, RunPipeline
from strata.gateway.drift_admin import SetBaseline
from strata.gateway.evals_admin import StartRun
from strata.gateway.feedback_api import FeedbackRequest
from strata.gateway.registry_admin import Approve, MoveAlias, Register
from strata.gateway.responses import ResponsesRequest
from strata.gateway.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from strata.gateway.vector_stores_api import (
    CreateFileBatch,
    CreateVectorStore,
    CreateVectorStoreFile,
    IngestDataset,
    SearchVectorStore,
    UpdateVectorStore,
    UpdateVectorStoreFile,
)
from strata.governance.config import BudgetRule, LimitRule
from strata.governance.roles import PERMISSIONS, ROLES
from strata.routing.config import DeploymentConfig, RouteConfig

MODELS: list[type[BaseModel]] = [ChatRequest, CompletionRequest, EmbeddingRequest, ResponsesRequest, FeedbackRequest,
                                 CreateKey, LimitRule, BudgetRule, RouteConfig, DeploymentConfig, CreateDataset,
                                 RunPipeline, CreateVectorStore, UpdateVectorStore, CreateVectorStoreFile,
                                 UpdateVectorStoreFile, CreateFileBatch, SearchVectorStore,
                                 IngestDataset]
ERROR_STATUSES = {"400": "Invalid request", "401": "Missing or invalid key", "403": "Not allowed for this key",
                  "404": "Not found", "413": "Request body too large", "429": "Rate limit or budget exceeded"}
UPSTREAM_STATUSES = {"502": "The engine failed", "503": "No deployment available", "504": "The engine timed out"}


@dataclass(frozen=True)
class Op:
    summary: str
    tag: str
    auth: str = "admin"  # "admin", "key" (any key) or "none"
    body: str | None = None  # a model name in MODELS, "partial:<name>", "rollout" or "reason"
    response: str = "Object"  # a schema in components
    query: tuple[str, ...] = ()
    stream: bool = False
    upstream: bool = False  # may answer 502/503/504 when the engine fails
    statuses: dict[str, str] = field(default_factory=dict)


def _vector_store_ops() -> dict[tuple[str, str], Op]:
    vs, b = "/v1/vector_stores/{vector_store_id}", "/file_batches/{batch_id}"
    page = ("limit", "after", "order")
    return {
        ("POST", "/v1/vector_stores"): Op("Create a vector store", "vector_stores", "key", "CreateVectorStore",
                                          "VectorStore"),
        ("GET", "/v1/vector_stores"): Op("List this team's vector stores", "vector_stores", "key", query=page,
                                         response="List"),
        ("GET", vs): Op("Retrieve a vector store", "vector_stores", "key", response="VectorStore"),
        ("POST", vs): Op("Modify a vector store", "vector_stores", "key", "UpdateVectorStore", "VectorStore"),
        ("DELETE", vs): Op("Delete a vector store (and its index)", "vector_stores", "key"),
        ("POST", f"{vs}/files"): Op("Add a file (ingested in the background; ACL in attributes.acl)",
                                    "vector_stores", "key", "CreateVectorStoreFile"),
        ("GET", f"{vs}/files"): Op("List a vector store's files", "vector_stores", "key",
                                   query=(*page, "filter"), response="List"),
        ("GET", f"{vs}/files/{{file_id}}"): Op("Retrieve a vector store file", "vector_stores", "key"),
        ("POST", f"{vs}/files/{{file_id}}"): Op("Update a vector store file's attributes", "vector_stores", "key",
                                                "UpdateVectorStoreFile"),
        ("DELETE", f"{vs}/files/{{file_id}}"): Op("Remove a file from a vector store (and every index)",
                                                  "vector_stores", "key"),
        ("GET", f"{vs}/files/{{file_id}}/content"): Op("A vector store file's parsed text", "vector_stores", "key"),
        ("POST", f"{vs}/file_batches"): Op("Add many files at once", "vector_stores", "key", "CreateFileBatch"),
        ("GET", f"{vs}{b}"): Op("Retrieve a file batch", "vector_stores", "key"),
        ("POST", f"{vs}{b}/cancel"): Op("Cancel a file batch's files not yet ingested", "vector_stores", "key"),
        ("GET", f"{vs}{b}/files"): Op("List a file batch's files", "vector_stores", "key", query=(*page, "filter"),
                                      response="List"),
        ("POST", f"{vs}/datasets"): Op("Strata: ingest a dataset version's documents (incremental)",
                                       "vector_stores", "key", "IngestDataset"),
        ("POST", f"{vs}/search"): Op("Search a vector store as the caller (ACL applied inside the search)",
                                     "vector_stores", "key", "SearchVectorStore", "Object"),
    }


MODELS += [Register, Approve, MoveAlias, StartRun, SetBaseline]


def _lifecycle_ops() -> dict[tuple[str, str], Op]:
    """The model registry and eval runs (``registry_admin``, ``evals_admin``)."""
    m, v = "/admin/registry/models", "/admin/registry/models/{model}/versions/{version}"
    return {
        ("GET", m): Op("List registered models, latest versions and aliases", "registry", response="List"),
        ("POST", m): Op("Register a new immutable model version (content hash computed here)", "registry",
                        body="Register"),
        ("GET", f"{m}/{{model}}"): Op("A model's versions (lineage, approval) and aliases", "registry"),
        ("GET", v): Op("One version, by number or alias", "registry"),
        ("POST", f"{v}/approve"): Op("Approve or reject a version (who and when are kept)", "registry",
                                     body="Approve"),
        ("PUT", f"{m}/{{model}}/aliases/{{alias}}"): Op("Move an alias (eval-gated; a canary on routes that follow "
                                                        "it)", "registry", body="MoveAlias",
                                                        statuses={"409": "An eval gate refused"}),
        ("GET", "/admin/evals/runs"): Op("Eval runs, newest first", "evals", query=("suite", "target"),
                                         response="List"),
        ("POST", "/admin/evals/runs"): Op("Start an eval run in the gateway (with the caller's key)", "evals",
                                          body="StartRun"),
        ("GET", "/admin/evals/runs/{run_id}"): Op("An eval run with its per-case results", "evals"),
        ("GET", "/admin/evals/compare"): Op("Paired comparison of two runs, per metric", "evals",
                                            query=("candidate", "baseline", "confidence")),
    }


def _drift_ops() -> dict[tuple[str, str], Op]:
    """Drift reports and baselines (``drift_admin``)."""
    r = "/admin/drift/{route}"
    return {
        ("GET", "/admin/drift"): Op("The latest drift report of every sampled route", "drift", response="List"),
        ("GET", r): Op("A route's latest drift report, or a fresh one (fresh=true, a from/to window, or one "
                       "deployment's observations only)", "drift", query=("fresh", "from", "to", "deployment")),
        ("GET", f"{r}/baseline"): Op("The route's registered reference window", "drift"),
        ("POST", f"{r}/baseline"): Op("Register a reference window (audited)", "drift", body="SetBaseline"),
        ("DELETE", f"{r}/baseline"): Op("Drop the registered reference window: the previous days become the "
                                        "reference again", "drift"),
    }


_ROUTE = "/admin/routes/{route}"
OPERATIONS: dict[tuple[str, str], Op] = {
    ("POST", "/v1/chat/completions"): Op("Create a chat completion", "inference", "key", "ChatRequest",
                                         "ChatCompletion", stream=True, upstream=True),
    ("POST", "/v1/completions"): Op("Create a text completion", "inference", "key", "CompletionRequest",
                                    "TextCompletion", stream=True, upstream=True),
    ("POST", "/v1/embeddings"): Op("Create embeddings", "inference", "key", "EmbeddingRequest", "EmbeddingList",
                                   upstream=True),
    ("POST", "/v1/responses"): Op("Create a response (OpenAI's Responses API, served by chat engines)", "inference",
                                  "key", "ResponsesRequest", "Response", stream=True, upstream=True),
    ("GET", "/v1/responses/{response_id}"): Op("Retrieve a stored response made with this key", "inference", "key",
                                               response="Response"),
    ("GET", "/v1/models"): Op("List the routes this key may use", "inference", "key", response="ModelList"),
    ("GET", "/v1/models/{model}"): Op("Retrieve one route", "inference", "key", response="Model"),
    ("POST", "/v1/feedback"): Op("Score a request you made, by its X-Request-Id", "inference", "key",
                                 "FeedbackRequest"),
    ("POST", "/v1/files"): Op("Upload a file (multipart/form-data: file, purpose)", "files", "key", "upload",
                              "File", statuses={"413": "File too large"}),
    ("GET", "/v1/files"): Op("List this team's files", "files", "key", response="List",
                             query=("purpose", "limit", "after", "order")),
    ("GET", "/v1/files/{file_id}"): Op("Retrieve a file", "files", "key", response="File"),
    ("DELETE", "/v1/files/{file_id}"): Op("Delete a file", "files", "key"),
    ("GET", "/v1/files/{file_id}/content"): Op("Download a file's content", "files", "key", response="bytes"),
    **_vector_store_ops(),
    ("GET", "/admin/lineage/{ref}"): Op("Lineage both ways from a request id or NAME@VERSION", "lineage",
                                        query=("team",)),
    ("POST", "/admin/keys"): Op("Create a key (the secret is shown once)", "keys", body="CreateKey"),
    ("GET", "/admin/keys"): Op("List keys", "keys", response="List"),
    ("DELETE", "/admin/keys/{key_id}"): Op("Revoke a key", "keys"),
    ("GET", "/admin/usage"): Op("Usage report", "usage", query=("by", "since")),
    ("GET", "/admin/cost"): Op("Cost report", "usage", query=("by", "since")),
    ("GET", "/admin/engines"): Op("Engine health, breakers and in-flight requests", "engines"),
    ("GET", "/admin/routes"): Op("List routes", "routes", response="List"),
    ("GET", _ROUTE): Op("Show a route", "routes"),
    ("PATCH", _ROUTE): Op("Change route settings (merged one level deep)", "routes", body="partial:RouteConfig"),
    ("GET", f"{_ROUTE}/changes"): Op("A route's audit trail", "routes", response="List"),
    ("POST", f"{_ROUTE}/reset"): Op("Reset a route to the config file", "routes"),
    ("PUT", f"{_ROUTE}/deployments/{{deployment}}"): Op("Add or replace a deployment", "routes",
                                                        body="DeploymentConfig"),
    ("DELETE", f"{_ROUTE}/deployments/{{deployment}}"): Op("Remove a deployment", "routes"),
    ("POST", f"{_ROUTE}/canary"): Op("Start a canary", "rollouts", body="rollout"),
    ("POST", f"{_ROUTE}/shadow"): Op("Start a shadow deployment", "rollouts", body="rollout"),
    ("POST", f"{_ROUTE}/promote"): Op("Promote the canary", "rollouts", body="reason"),
    ("POST", f"{_ROUTE}/rollback"): Op("Roll the canary back", "rollouts", body="reason"),
    ("GET", f"{_ROUTE}/rollout"): Op("Rollout status and recent events", "rollouts"),
    ("GET", f"{_ROUTE}/shadow"): Op("Shadow comparison report", "rollouts", query=("since",)),
    ("GET", "/admin/traces"): Op("Recent traces of this gateway process", "traces",
                                 query=("route", "status", "limit"), response="List"),
    ("GET", "/admin/traces/{trace_id}"): Op("One trace's span tree, by trace id or request id", "traces"),
    ("GET", "/admin/quality"): Op("Online quality per route, deployment and scorer: mean, n, confidence interval",
                                  "quality", query=("window", "route")),
    ("GET", "/admin/quality/{request_id}"): Op("One request's quality scores, with its ledger row", "quality"),
    ("GET", "/admin/datasets"): Op("List datasets of the key's teams (or one team)", "datasets", query=("team",),
                                   response="List"),
    ("POST", "/admin/datasets"): Op("Create a dataset version from records or captured ledger traffic", "datasets",
                                    body="CreateDataset"),
    ("GET", "/admin/datasets/{name}"): Op("A dataset and its versions", "datasets", query=("team",)),
    ("GET", "/admin/datasets/{name}/diff"): Op("Records added, removed and changed between two versions",
                                               "datasets", query=("team", "from", "to")),
    ("GET", "/admin/datasets/{name}/versions/{version}"): Op("One version (number, latest or hash prefix)",
                                                             "datasets", query=("team",)),
    ("GET", "/admin/datasets/{name}/versions/{version}/records"): Op("A page of a version's records", "datasets",
                                                                     query=("team", "offset", "limit"),
                                                                     response="List"),
    ("GET", "/admin/pipelines/runs"): Op("Pipeline runs of the key's teams", "datasets", query=("team",),
                                         response="List"),
    ("POST", "/admin/pipelines/runs"): Op("Run a pipeline over a dataset version; failing checks reject it",
                                          "datasets", body="RunPipeline"),
    ("GET", "/admin/pipelines/runs/{run_id}"): Op("One pipeline run: steps, cache hits, checks", "datasets"),
    **_lifecycle_ops(),
    **_drift_ops(),
    ("GET", "/admin/audit"): Op("The audit log, newest first", "audit", query=("since", "action", "limit"),
                                response="List"),
    ("GET", "/admin/audit/verify"): Op("Verify the audit log's hash chain; names the first bad entry", "audit"),
    ("GET", "/admin/events"): Op("Recent events (rollouts, breakers, alerts)", "events", query=("kind", "subject"),
                                 response="List"),
    ("GET", "/admin/slo"): Op("Per route SLOs from the ledger: SLI, error budget left, burn rates over 1h/6h/3d",
                              "slo", query=("route",), response="List"),
    **{(m, f"/admin/{kind}{tail}"): op for kind, rule in (("limits", "LimitRule"), ("budgets", "BudgetRule"))
       for (m, tail), op in {
           ("GET", ""): Op(f"List {kind}", "policies", response="List"),
           ("PUT", ""): Op(f"Add or replace a rule in {kind}", "policies", body=rule),
           ("DELETE", ""): Op(f"Remove a rule from {kind}", "policies",
                              query=("scope", "subject", *(("period",) if kind == "budgets" else ()))),
           ("GET", "/changes"): Op(f"The audit trail of {kind}", "policies", response="List"),
       }.items()},
    ("GET", "/healthz"): Op("Liveness", "health", "none"),
    ("GET", "/readyz"): Op("Readiness: every local engine is up", "health", "none",
                           statuses={"503": "Still starting"}),
    ("GET", "/metrics"): Op("Prometheus metrics", "health", "none", response="text"),
    ("GET", "/openapi.json"): Op("This document", "health", "none"),
}
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")
_QUERY = {"by": "Group by (team, key, route, model, tag:NAME …)", "since": "A window: 30m, 24h, 7d",
          "kind": "Event kind", "subject": "Event subject or rule subject", "scope": "Rule scope",
          "period": "Budget period (day, week, month)", "route": "Only this route",
          "status": "Only this HTTP status", "limit": "At most this many (1 to 1000)",
          "action": "Only entries of this action (key.create, route.canary_rollback, limit.set …)",
          "purpose": "Only files of this purpose",
          "team": "The team (default: the key's team)", "offset": "Skip this many records",
          "from": "The older version (number or hash prefix); drift: the window's start (ISO 8601)",
          "to": "The newer version (number or hash prefix); drift: the window's end (ISO 8601)",
          "after": "The id after which the page starts (a cursor)",
          "order": "asc or desc (by creation)", "window": "A window: 1h, 24h, 7d",
          "filter": "Only files of this status",
          "deployment": "Only this deployment (model version) of the route"}
_QUERY.update({"suite": "Only runs of this suite", "target": "Only runs against this target",
               "candidate": "The run under test", "baseline": "The run to compare with",
               "confidence": "One-sided confidence of 'worse' (default 0.95)",
               "fresh": "true: compute a report now instead of the latest stored one"})
_UPLOAD = {"type": "object", "required": ["file", "purpose"],
           "properties": {"file": {"type": "string", "format": "binary"}, "purpose": {"type": "string"}}}


def operations(routes: Iterable[BaseRoute]) -> list[tuple[str, str]]:
    """(method, OpenAPI path) of every route the app serves (HEAD, added by Starlette to GET, left out)."""
    out = []
    for route in routes:
        if isinstance(route, Route):
            for method in sorted((route.methods or {"GET"}) - {"HEAD"}):
                out.append((method, _PARAM.sub(r"{\1}", route.path)))
    return out


def build(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    schemas = copy.deepcopy(_components())  # the caller may change its document
    paths: dict[str, dict[str, Any]] = {}
    for method, path in operations(routes):
        op = OPERATIONS.get((method, path)) or Op("Undocumented", "undocumented")
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Strata", "version": _version(),
                 "description": "OpenAI-compatible inference (/v1) and Strata's admin API (/admin). "
                                "Errors have OpenAI's shape: {\"error\": {message, type, param, code}}."},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                                      "description": "A Strata key (sk-strata-…) or the admin key"}}},
        "security": [{"bearer": []}],
    }


def _operation(method: str, path: str, op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": op.summary, "tags": [op.tag],
                           "operationId": f"{method.lower()}{re.sub(r'[^A-Za-z0-9]+', '_', path)}".rstrip("_")}
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
              for n in _PARAM.findall(path)]
    params += [{"name": n, "in": "query", "required": n in ("scope", "subject") and method == "DELETE",
                "description": _QUERY[n], "schema": {"type": "string"}} for n in op.query]
    if params:
        out["parameters"] = params
    if op.body == "upload":
        out["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": _UPLOAD}}}
    elif op.body:
        out["requestBody"] = {"required": op.body != "reason",
                              "content": {"application/json": {"schema": _body_schema(op.body)}}}
    out["responses"] = _responses(op)
    if op.auth == "none":
        out["security"] = []
    elif (rule := RULES.get((method, path))) is not None and rule.permission is not None:
        roles = ", ".join(r for r in ROLES if rule.permission in PERMISSIONS[r])
        out["description"] = f"Needs the {rule.permission!r} permission (roles: {roles})."
    return out


def _body_schema(body: str) -> dict[str, Any]:
    if body.startswith("partial:"):  # every field optional: merged into the current value
        return {"type": "object", "description": f"A partial {body[8:]}",
                "properties": {k: v for k, v in _model_schema(body[8:]).get("properties", {}).items()
                               if k not in ("name", "deployments")}}
    if body == "rollout":
        return {"type": "object", "properties": {
            "traffic": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
            "steps": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 100}},
            "model": {"type": "string"}, "name": {"type": "string"}, "reason": {"type": "string"},
            "engine": {"type": "object"}, "canary": {"$ref": "#/components/schemas/CanaryConfig"},
            "price": {"$ref": "#/components/schemas/Price"}}}
    if body == "reason":
        return {"type": "object", "properties": {"reason": {"type": "string"}}}
    return {"$ref": f"#/components/schemas/{body}"}


def _responses(op: Op) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    if op.response == "text":
        ok: dict[str, Any] = {"text/plain": {"schema": {"type": "string"}}}
    elif op.response == "bytes":
        ok = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
    else:
        ok = {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.response}"}}}
    if op.stream:
        ok["text/event-stream"] = {"schema": {"type": "string", "description": "Server-sent events, ending in "
                                              "data: [DONE]"}}
    out: dict[str, Any] = {"200": {"description": "OK", "content": ok}}
    statuses = {**({} if op.auth == "none" else ERROR_STATUSES), **(UPSTREAM_STATUSES if op.upstream else {}),
                **op.statuses}
    for status, description in statuses.items():
        out[status] = {"description": description, "content": error}
    return out


def _model_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = _components()[name]
    return schema


_cache: dict[str, Any] = {}


def _components() -> dict[str, Any]:
    if not _cache:
        _, top = models_json_schema([(m, "validation") for m in MODELS], ref_template="#/components/schemas/{model}")
        _cache.update(top.get("$defs", {}))
        _cache.update(_RESPONSES)
    return _cache


def _obj(object_: str | None = None, **props: Any) -> dict[str, Any]:
    properties = {"object": {"const": object_}} if object_ else {}
    return {"type": "object", "properties": {**properties, **props}, "additionalProperties": True}


_STR, _INT = {"type": "string"}, {"type": "integer"}
_ANSWER = {"id": _STR, "created": _INT, "model": _STR, "choices": {"type": "array", "items": {"type": "object"}},
           "usage": {"type": "object"}}
_RESPONSES: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["message", "type"],
        "properties": {"message": _STR, "type": _STR, "param": {"type": ["string", "null"]},
                       "code": {"type": ["string", "null"]}}}}},
    "Object": {"type": "object"},
    "List": _obj("list", data={"type": "array", "items": {"type": "object"}}),
    "ChatCompletion": _obj("chat.completion", **_ANSWER),
    "TextCompletion": _obj("text_completion", **_ANSWER),
    "EmbeddingList": _obj("list", model=_STR, usage={"type": "object"}, data={"type": "array", "items": _obj(
        "embedding", index=_INT, embedding={"oneOf": [{"type": "array", "items": {"type": "number"}}, _STR]})}),
    "Response": _obj("response", id=_STR, created_at=_INT, status=_STR, model=_STR, usage={"type": ["object", "null"]},
                     output={"type": "array", "items": {"type": "object"}}),
    "VectorStore": _obj("vector_store", id=_STR, created_at=_INT, name=_STR, status=_STR, usage_bytes=_INT,
                        file_counts={"type": "object"}),
    "File": _obj("file", id=_STR, bytes=_INT, created_at=_INT, filename=_STR, purpose=_STR),
    "Model": _obj("model", id=_STR, created=_INT, owned_by=_STR),
    "ModelList": _obj("list", data={"type": "array", "items": {"$ref": "#/components/schemas/Model"}}),
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("strata")
    except PackageNotFoundError:
        return "0"


def render(routes: Iterable[BaseRoute]) -> bytes:
    return orjson.dumps(build(routes))


async def openapi_json(request: Request) -> Response:
    doc: bytes = request.app.state.openapi
    return Response(doc, media_type="application/json")


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
