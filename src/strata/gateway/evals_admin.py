"""Admin API of eval runs: list, show (with per-case results), compare two runs, start a run.

A run started here runs in the gateway process, through the gateway's own HTTP API with the caller's key
(so it is governed and accounted as the caller's traffic), and can be followed with ``GET`` on the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.routing import Route

from strata.config.base import Strict
from strata.errors import InvalidRequest, StrataError
from strata.evals import service
from strata.evals.client import Gateway
from strata.evals.runner import load_suite, new_run_id, run_suite
from strata.evals.store import EvalStore
from strata.gateway.admin import guarded
from strata.gateway.http import read_json
from strata.gateway.routes_admin import actor_of
from strata.gateway.schemas import validate
from strata.gateway.state import AppState

log = logging.getLogger(__name__)


class StartRun(Strict):
    suite: str = Field(description="A suite of evals.suites, or a suite YAML path on the gateway's machine")
    target: str
    run_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    baseline: str | None = None


async def list_runs(state: AppState, request: Request) -> dict[str, Any]:
    q = request.query_params
    data = await asyncio.to_thread(EvalStore(state.db).runs, q.get("suite"), q.get("target"))
    return {"object": "list", "data": data}


async def show_run(state: AppState, request: Request) -> dict[str, Any]:
    return await asyncio.to_thread(service.show, EvalStore(state.db), request.path_params["run_id"])


async def compare_runs(state: AppState, request: Request) -> dict[str, Any]:
    q = request.query_params
    if not q.get("candidate") or not q.get("baseline"):
        raise InvalidRequest("compare needs ?candidate=RUN&baseline=RUN", param="candidate")
    try:
        confidence = float(q.get("confidence", "0.95"))
    except ValueError:
        raise InvalidRequest("confidence is a number such as 0.95", param="confidence") from None
    return await asyncio.to_thread(service.compare, EvalStore(state.db), q["candidate"], q["baseline"], confidence)


async def start_run(state: AppState, request: Request) -> dict[str, Any]:
    req: StartRun = validate(StartRun, await read_json(request, 16 * 1024))
    suite = await asyncio.to_thread(load_suite, req.suite, state.settings, state.db)
    run_id = req.run_id or new_run_id()
    key = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    base = str(request.base_url).rstrip("/")
    actor = actor_of(request)

    async def run() -> None:
        gateway = Gateway(base, key, run_id, suite.config.timeout)
        try:
            await run_suite(suite, gateway, EvalStore(state.db), req.target, actor, req.baseline)
        except StrataError as exc:
            log.warning("eval run %s failed: %s", run_id, exc.message)
            with contextlib.suppress(StrataError):  # a run that never started has no record to mark
                await asyncio.to_thread(EvalStore(state.db).finish, run_id, {"error": exc.message}, "failed")
        finally:
            await gateway.close()

    task = asyncio.get_running_loop().create_task(run())
    state.tasks.background.add(task)
    task.add_done_callback(state.tasks.background.discard)
    await state.observe.audit.record(actor, "eval.run", run_id, {"suite": suite.config.name, "target": req.target})
    return {"id": run_id, "suite": suite.config.name, "target": req.target, "status": "running"}


routes = [
    Route("/admin/evals/runs", guarded(list_runs), methods=["GET"]),
    Route("/admin/evals/runs", guarded(start_run), methods=["POST"]),
    Route("/admin/evals/runs/{run_id}", guarded(show_run), methods=["GET"]),
    Route("/admin/evals/compare", guarded(compare_runs), methods=["GET"]),
]
