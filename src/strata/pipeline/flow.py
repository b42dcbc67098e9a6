"""What one request carries through the stages (``Flow``), and the API surface it came in by (``Surface``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from strata.pipeline.record import CallRecord

if TYPE_CHECKING:
    from strata.gateway.cache import Entry
    from strata.gateway.relay import Relay
    from strata.gateway.state import AppState
    from strata.observe.tracing import Span
    from strata.pipeline.stage import Pipeline
    from strata.routing.config import RouteConfig
    from strata.routing.router import Attempts, Deployment, Target


class Surface(Protocol):
    """An API the pipeline serves (chat completions, completions, embeddings, the Responses API): how its
    request becomes an engine call, and how the engine's answer becomes its response."""

    @property
    def kind(self) -> str:
        """The engine call: "chat", "completion" or "embeddings"."""

    operation: str  # gen_ai.operation.name: "chat", "text_completion", "embeddings"
    @property
    def schema(self) -> type:
        """The pydantic model a request body is validated with."""

    cacheable: bool  # its answers may be served from the route's cache
    shadowed: bool  # its requests may be mirrored to a shadow deployment
    continuable: bool  # a broken stream may be continued on another deployment

    async def prepare(self, flow: Flow, raw: dict[str, Any]) -> dict[str, Any]:
        """The chat/completion/embeddings body for this API's request body."""

    def engine_call(self, flow: Flow, target: Target) -> Any:
        """The awaitable JSON engine call for one attempt."""

    async def answer(self, flow: Flow, result: dict[str, Any]) -> Response:
        """The JSON response for the engine's answer."""

    def stream(self, flow: Flow, relay: Relay) -> Response:
        """The SSE response relaying the engine's stream."""

    async def cached(self, flow: Flow, entry: Entry) -> Response:
        """The response for a cache hit."""


@dataclass(slots=True, eq=False)
class Flow:
    """One request on its way through the stages: each stage reads what the ones before it set, and adds."""

    state: AppState
    request: Request
    call: CallRecord
    surface: Surface
    body: dict[str, Any] | None = None
    req: Any = None  # the validated request (``surface.schema``)
    route: RouteConfig | None = None
    prompt_limit: int | None = None  # the most prompt tokens the route's context policy lets through
    held: str | None = None  # the key whose concurrency slot this request holds (``admit`` gives it back)
    attempts: Attempts | None = None
    target: Target | None = None  # the deployment that answered
    shadow: tuple[Deployment, dict[str, Any]] | None = None
    relay: Relay | None = None  # a stream: its relay runs the way out when the stream ends
    root: Span | None = None  # the request's span
    stages: Pipeline | None = None  # the stages it goes through (``run`` sets them)
    done: bool = False
    retrieval: Any = None  # pipeline.retrieve.Retrieval asked by the request (file_search); a route's rag: is found
    sampled: bool = False  # observed for drift detection (``pipeline.drift``)
    quality: bool = False  # picked for online quality scoring (``pipeline.quality``)
