"""Admin API for datasets and pipelines (``strata.data``): create versions (records in the body or captured
ledger traffic), list, show, read records, diff, run pipelines. Team-scoped: ``team`` (default: the key's
team) must be one of the key's teams; another team's dataset is "not found"."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.routing import Route

from strata.data.pipeline import PipelineSpec, get_run, list_runs
from strata.data.service import DataService
from strata.data.sources import LedgerFilter
from strata.data.steps import SyncEmbed
from strata.errors import InvalidRequest, NotFound, PermissionDenied
from strata.gateway.admin import guarded, principal_of
from strata.gateway.http import read_json, request_id_of
from strata.gateway.schemas import validate
from strata.gateway.state import AppState
from strata.observe.usage import window_start
from strata.pipeline.internal import embedder
from strata.pipeline.record import CallRecord


class LedgerQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    route: str | None = None
    since: str | None = Field(None, description="A window back from now: 30m, 24h, 7d")
    until: str | None = Field(None, description="A window back from now where the capture ends")
    status: int | None = None
    endpoint: str | None = None
    limit: int = Field(100_000, ge=1, le=1_000_000)


class CreateDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    team: str | None = None
    description: str | None = Field(None, max_length=2000)
    records: list[dict[str, Any]] | None = None
    id_field: str | None = "id"
    ledger: LedgerQuery | None = None
    checks: list[dict[str, dict[str, Any]]] = Field(default_factory=list)


class RunPipeline(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pipeline: PipelineSpec
    input: str = Field(min_length=1, description="NAME or NAME@VERSION")
    team: str | None = None


def _service(state: AppState) -> DataService:
    if state.data is None:
        raise NotFound("datasets are not enabled on this gateway", code="datasets_disabled")
    return state.data


def _team(request: Request, given: str | None = None, write: bool = False) -> str:
    principal = principal_of(request)
    team = given or request.query_params.get("team") or principal.team
    if not principal.scopes.team_ok(team):
        if write:
            raise PermissionDenied(f"This key may manage datasets only of teams "
                                   f"{', '.join(sorted(principal.scopes.teams or ()))}; not {team!r}.",
                                   code="scope_denied")
        raise NotFound(f"no dataset in team {team!r}", code="dataset_not_found")
    return team


def _checks(raw: list[dict[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for item in raw:
        if len(item) != 1:
            raise InvalidRequest('each check is {"expect_…": {params}}', param="checks")
        (name, params), = item.items()
        out.append((name, params or {}))
    return out


async def create_dataset(state: AppState, request: Request) -> dict[str, Any]:
    svc = _service(state)
    req: CreateDataset = validate(CreateDataset, await read_json(request, state.settings.server.max_body_bytes))
    team = _team(request, req.team, write=True)
    actor = principal_of(request).key_id
    if (req.records is None) == (req.ledger is None):
        raise InvalidRequest("give either records or ledger", param="records")
    kw: dict[str, Any] = {"description": req.description, "actor": actor, "checks": _checks(req.checks)}
    if req.records is not None:
        if len(req.records) > svc.settings.max_records_per_request:
            raise InvalidRequest(f"at most {svc.settings.max_records_per_request} records per request",
                                 param="records")
        made = await asyncio.to_thread(svc.create, team, req.name, req.records, source={"kind": "records"},
                                       id_field=req.id_field, **kw)
    else:
        q = req.ledger
        assert q is not None
        flt = LedgerFilter(team, q.route, window_start(q.since) if q.since else None,
                           window_start(q.until) if q.until else None, q.status, q.endpoint, q.limit)
        made = await asyncio.to_thread(svc.create_from_ledger, team, req.name, flt, **kw)
    await state.observe.audit.record(actor, "dataset.version", made.version.ref,
                                     {"team": team, "content_hash": made.version.content_hash,
                                      "status": made.version.status, "created": made.created})
    return {**made.version.view(), "created": made.created}


async def list_datasets(state: AppState, request: Request) -> dict[str, Any]:
    svc = _service(state)
    principal = principal_of(request)
    asked = request.query_params.get("team")
    teams = [_team(request, asked)] if asked else (sorted(principal.scopes.teams) if principal.scopes.teams
                                                   is not None else None)
    data = await asyncio.to_thread(svc.store.list_datasets, teams)
    return {"object": "list", "data": [d.view() for d in data]}


async def show_dataset(state: AppState, request: Request) -> dict[str, Any]:
    svc = _service(state)
    team, name = _team(request), request.path_params["name"]
    info = await asyncio.to_thread(svc.store.get_dataset, team, name)
    versions = await asyncio.to_thread(svc.store.list_versions, team, name)
    return {**info.view(), "versions_list": [v.view() for v in versions]}


async def show_version(state: AppState, request: Request) -> dict[str, Any]:
    svc = _service(state)
    v = await asyncio.to_thread(svc.store.get_version, _team(request), request.path_params["name"],
                                request.path_params["version"], True)
    return v.view()


async def version_records(state: AppState, request: Request) -> dict[str, Any]:
    svc = _service(state)
    v = await asyncio.to_thread(svc.store.get_version, _team(request), request.path_params["name"],
                                request.path_params["version"], True)
    offset, limit = _int(request, "offset", 0), _int(request, "limit", 100)
    if not 1 <= limit <= 1000 or offset < 0:
        raise InvalidRequest("limit is 1 to 1000 and offset 0 or more", param="limit")

    def page() -> list[dict[str, Any]]:
        out = []
        for i, r in enumerate(svc.store.iter_records(v)):
            if i >= offset + limit:
                break
            if i >= offset:
                out.append({"id": r.id, "content_hash": r.content_hash, "data": r.data})
        return out

    return {"object": "list", "version": v.ref, "data": await asyncio.to_thread(page)}


async def diff_versions(state: AppState, request: Request) -> dict[str, Any]:
    svc = _service(state)
    team, name = _team(request), request.path_params["name"]
    q = request.query_params
    if not q.get("from") or not q.get("to"):
        raise InvalidRequest("from and to (version numbers or hashes) are required", param="from")
    a = await asyncio.to_thread(svc.store.get_version, team, name, q["from"], True)
    b = await asyncio.to_thread(svc.store.get_version, team, name, q["to"], True)
    return (await asyncio.to_thread(svc.store.diff, a, b)).view()


async def run_pipeline(state: AppState, request: Request) -> dict[str, Any]:
    svc = _service(state)
    req: RunPipeline = validate(RunPipeline, await read_json(request, state.settings.server.max_body_bytes))
    team = _team(request, req.team, write=True)
    actor = principal_of(request).key_id
    needs_embed = any(s.step == "embed" for s in req.pipeline.steps)
    embed = _sync_embed(state, svc.settings.embeddings_route, request) if needs_embed else None
    result = await asyncio.to_thread(svc.run_pipeline, team, req.pipeline, req.input, embed=embed, actor=actor)
    await state.observe.audit.record(actor, "pipeline.run", result.output.ref,
                                     {"team": team, "pipeline": result.pipeline, "status": result.status,
                                      "input": result.input.ref})
    return result.view()


async def list_pipeline_runs(state: AppState, request: Request) -> dict[str, Any]:
    svc = _service(state)
    principal = principal_of(request)
    asked = request.query_params.get("team")
    teams = [_team(request, asked)] if asked else (sorted(principal.scopes.teams) if principal.scopes.teams
                                                   is not None else None)
    return {"object": "list", "data": await asyncio.to_thread(list_runs, svc.store, teams)}


async def show_pipeline_run(state: AppState, request: Request) -> dict[str, Any]:
    svc = _service(state)
    run = await asyncio.to_thread(get_run, svc.store, None, request.path_params["run_id"])
    if not principal_of(request).scopes.team_ok(run["team"]):
        raise NotFound(f"no pipeline run {request.path_params['run_id']!r}", code="pipeline_run_not_found")
    return run


def _sync_embed(state: AppState, route: str, request: Request) -> SyncEmbed:
    """The embed step runs in a worker thread; its embeddings go through the gateway's route (attempts,
    breakers, metrics) on the event loop, each batch a ledger row of role ``embedding`` under this request's
    id (the client's X-Request-Id, else a new one) and the caller's key."""
    embed = embedder(state, route)
    assert embed is not None
    loop = asyncio.get_running_loop()
    parent = CallRecord(request_id_of(request, state.new_id), "embeddings", route=route)
    parent.principal = principal_of(request)
    parent.tags = {"pipeline": "data"}

    async def one(texts: list[str]) -> list[list[float]]:
        return await embed(texts, parent)

    def call(texts: list[str]) -> list[list[float]]:
        return asyncio.run_coroutine_threadsafe(one(texts), loop).result()

    return call


def _int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    try:
        return default if raw is None else int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", param=name) from None


_DS = "/admin/datasets/{name}"
routes = [
    Route("/admin/datasets", guarded(list_datasets), methods=["GET"]),
    Route("/admin/datasets", guarded(create_dataset), methods=["POST"]),
    Route(_DS, guarded(show_dataset), methods=["GET"]),
    Route(f"{_DS}/diff", guarded(diff_versions), methods=["GET"]),
    Route(f"{_DS}/versions/{{version}}", guarded(show_version), methods=["GET"]),
    Route(f"{_DS}/versions/{{version}}/records", guarded(version_records), methods=["GET"]),
    Route("/admin/pipelines/runs", guarded(list_pipeline_runs), methods=["GET"]),
    Route("/admin/pipelines/runs", guarded(run_pipeline), methods=["POST"]),
    Route("/admin/pipelines/runs/{run_id}", guarded(show_pipeline_run), methods=["GET"]),
]
