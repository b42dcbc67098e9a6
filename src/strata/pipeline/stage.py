"""The stage protocol, the ordered list of stages (``Pipeline``), and the runner (``run``) that takes a request
through it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

from starlette.responses import Response

from strata.errors import InternalError, StrataError
from strata.gateway.http import Gone, error_response
from strata.observe.tracing import ERROR, SERVER
from strata.pipeline.flow import Flow
from strata.pipeline.record import CallRecord

log = logging.getLogger(__name__)


class Stage:
    """One step of the request path. ``before`` may answer (a cache hit, the engine's answer) or raise (a
    refusal); ``after`` runs once per request for every stage, in reverse order, and must only undo or record
    what its own ``before`` did (it looks at the flow to know whether it ran)."""

    name: str = "stage"

    async def before(self, flow: Flow) -> Response | None:
        return None

    def after(self, flow: Flow) -> None:
        return None


class Pipeline:
    """Stages in the order a request goes through them. Worked out once, not per request: which stages have a
    ``before`` or an ``after`` of their own (an untraced request skips the inherited no-ops; a traced one
    still gets a span for every stage)."""

    __slots__ = ("stages", "acting", "settling")

    def __init__(self, *stages: Stage) -> None:
        self.stages = stages
        self.acting = tuple(s for s in stages if type(s).before is not Stage.before)
        self.settling = tuple(s for s in reversed(stages) if type(s).after is not Stage.after)

    def __iter__(self) -> Iterator[Stage]:
        return iter(self.stages)

    def __len__(self) -> int:
        return len(self.stages)


async def run(pipeline: Pipeline, flow: Flow) -> Response:
    """Take ``flow`` through the pipeline's stages until one answers; the way out runs now, or when a stream
    ends."""
    call = flow.call
    flow.stages = pipeline
    trace = call.trace
    if trace is not None:
        flow.root = call.span = trace.start(flow.surface.operation, None, SERVER)
    response: Response | None = None
    try:
        for stage in pipeline.acting if trace is None else pipeline.stages:
            response = await (stage.before(flow) if trace is None else _traced(stage, flow))
            if response is not None:
                break
        else:
            raise RuntimeError("no stage answered the request")
    except asyncio.CancelledError:
        call.status, call.error_type = 499, "client_disconnected"
        if call.watch is None or not call.watch.stop():  # not the client leaving: the server stopping
            _way_out(pipeline, flow)
            raise
        response = Gone()
    except Exception as exc:
        response = failed(call, exc)
    _way_out(pipeline, flow)
    if trace is not None:
        response.headers["x-strata-trace-id"] = trace.hex_id
    return response


def _way_out(pipeline: Pipeline, flow: Flow) -> None:
    if flow.relay is None:  # else the relay runs it when the stream ends
        if flow.call.watch is not None:
            flow.call.watch.stop()
        finish(pipeline, flow)


async def _traced(stage: Stage, flow: Flow) -> Response | None:
    call = flow.call
    assert call.trace is not None
    span = call.span = call.trace.start(stage.name, flow.root)
    try:
        return await stage.before(flow)
    except BaseException as exc:
        span.end(error_code(exc))
        raise
    finally:
        span.end()
        call.span = flow.root


def finish(pipeline: Pipeline, flow: Flow) -> None:
    """The way out: every stage's ``after``, last stage first, exactly once; then the trace is complete."""
    if flow.done:
        return
    flow.done = True
    call = flow.call
    span = call.span = call.trace.start("strata.account", flow.root) if call.trace is not None else None
    for stage in pipeline.settling:
        try:
            stage.after(flow)
        except Exception:  # one stage's bookkeeping must not skip the others'
            log.exception("request %s: stage %s failed on the way out", call.request_id, stage.name)
    if span is not None:
        span.end()
        _close_trace(flow)


def _close_trace(flow: Flow) -> None:
    from strata.pipeline.telemetry import request_attributes

    call, root = flow.call, flow.root
    assert root is not None and call.trace is not None
    root.name = f"{flow.surface.operation} {call.route or '-'}"
    request_attributes(root, flow)
    root.end()
    if call.status >= 400:
        root.status, root.message = ERROR, call.error_type
    flow.state.observe.tracer.finish(call.trace)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, StrataError):
        return exc.code or exc.type
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return type(exc).__name__


def failed(call: CallRecord, exc: Exception) -> Response:
    """The answer to a request that raised: its own error for a ``StrataError``, else an internal error (logged
    with its traceback). The ledger row gets the status the client sees."""
    if not isinstance(exc, StrataError):
        log.error("request %s: unhandled error", call.request_id, exc_info=exc)
        exc = InternalError("Internal error in the gateway.")
    call.fail(exc)
    return error_response(exc, call.request_id)
