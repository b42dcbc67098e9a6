"""Admin API of the model registry: register versions, list and show models, approve versions, move aliases.

Moving an alias (``PUT /admin/registry/models/{model}/aliases/{alias}``) is a rollout: see
``registry.rollout``. Every write is in the audit trail.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.routing import Route

from strata.config.base import Strict
from strata.gateway.admin import guarded
from strata.gateway.http import read_json
from strata.gateway.routes_admin import actor_of
from strata.gateway.schemas import validate
from strata.gateway.state import AppState
from strata.registry import lineage
from strata.registry.rollout import move_alias
from strata.registry.store import NewVersion, RegistryStore


class Register(Strict):
    model: str
    artifact: str = Field(description="A GGUF file or model directory, bundled:NAME, or an upstream's model name")
    engine_type: str = "llamacpp"
    parameters: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    run_id: str | None = None
    dataset_versions: list[str] = Field(default_factory=list)
    tags: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None


class Approve(Strict):
    status: str = "approved"
    note: str | None = None


class MoveAlias(Strict):
    version: int = Field(ge=1)
    reason: str | None = None


def _store(state: AppState) -> RegistryStore:
    return RegistryStore(state.db)


async def list_models(state: AppState, request: Request) -> dict[str, Any]:
    return {"object": "list", "data": await asyncio.to_thread(_store(state).models)}


async def register(state: AppState, request: Request) -> dict[str, Any]:
    req: Register = validate(Register, await read_json(request, 256 * 1024))
    new = NewVersion(req.model, req.artifact, req.engine_type, req.parameters, req.metrics, req.run_id,
                     req.dataset_versions, req.tags, req.description)
    actor = actor_of(request)
    view = await asyncio.to_thread(_store(state).register, new, actor)
    await asyncio.to_thread(lineage.record, state.db, view)
    await state.observe.audit.record(actor, "registry.register", view["ref"],
                                     {k: view[k] for k in ("artifact_uri", "content_hash", "engine_type", "run_id",
                                                           "dataset_versions")})
    return view


async def show_model(state: AppState, request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(_store(state).show, request.path_params["model"])


async def show_version(state: AppState, request: Request) -> dict[str, Any]:
    p = request.path_params
    return await asyncio.to_thread(_store(state).version, p["model"], p["version"])


async def approve(state: AppState, request: Request) -> dict[str, Any]:
    p = request.path_params
    req: Approve = validate(Approve, await read_json(request, 16 * 1024) if await request.body() else {})
    version = (await asyncio.to_thread(_store(state).version, p["model"], p["version"]))["version"]
    actor = actor_of(request)
    view = await asyncio.to_thread(_store(state).approve, p["model"], version, actor, req.status, req.note)
    await state.observe.audit.record(actor, f"registry.{req.status}", view["ref"], {"note": req.note})
    return view


async def set_alias(state: AppState, request: Request) -> dict[str, Any]:
    p = request.path_params
    req: MoveAlias = validate(MoveAlias, await read_json(request, 16 * 1024))
    return await move_alias(state, p["model"], p["alias"], req.version, actor_of(request), req.reason)


_M = "/admin/registry/models"
routes = [
    Route(_M, guarded(list_models), methods=["GET"]),
    Route(_M, guarded(register), methods=["POST"]),
    Route(f"{_M}/{{model}}", guarded(show_model), methods=["GET"]),
    Route(f"{_M}/{{model}}/versions/{{version}}", guarded(show_version), methods=["GET"]),
    Route(f"{_M}/{{model}}/versions/{{version}}/approve", guarded(approve), methods=["POST"]),
    Route(f"{_M}/{{model}}/aliases/{{alias}}", guarded(set_alias), methods=["PUT"]),
]
