"""``POST /v1/feedback``: score a request you made, by its ``X-Request-Id``."""

from __future__ import annotations

import asyncio
import math

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strata.errors import NotFound, StrataError
from strata.gateway.http import error_response, json_response, read_json, request_id_of
from strata.gateway.schemas import validate
from strata.gateway.state import AppState
from strata.observe.feedback import find_request, record_feedback


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=128)
    score: float = Field(ge=-1e6, le=1e6)
    name: str = Field("user", min_length=1, max_length=64, description="What the score measures")
    comment: str | None = Field(None, max_length=2000)

    @field_validator("score")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


async def feedback(request: Request) -> Response:
    state: AppState = request.app.state.strata
    rid = request_id_of(request, state.new_id)
    try:
        principal = await state.governance.auth.authenticate_request(request)
        req: FeedbackRequest = validate(FeedbackRequest, await read_json(request, 16 * 1024))
        served = state.observe.ledger.find_pending(req.request_id) or await asyncio.to_thread(
            find_request, state.db, req.request_id)
        if served is None or not (principal.is_admin or served.get("key_id") == principal.key_id):
            raise NotFound(f"No request with id {req.request_id!r} made with this key.", param="request_id",
                           code="request_not_found")
        out = await asyncio.to_thread(record_feedback, state.db, served, req.request_id, principal.key_id,
                                      req.name, req.score, req.comment)
        if served.get("route") and served.get("role"):
            state.routing.rollouts.feedback(served["route"], served["role"], req.score)
        return json_response(out, rid)
    except StrataError as exc:
        return error_response(exc, rid)


routes = [Route("/v1/feedback", feedback, methods=["POST"])]
