"""Stage ``retrieve``: on a route with ``rag:`` (``routing.config.RetrievalConfig``), search the last user
message as the caller, inject the readable passages with citation markers, and record the chunks used.

The chunks go to the ledger row (``rag`` column: ids and scores, no text), the stage's span, the
``x-strata-rag-chunks`` response header (``1=chunk_id,2=…``) and the lineage graph (chunk -> request).
Routes without ``rag:`` pay one attribute check.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

from strata.errors import InvalidRequest
from strata.files.vector_stores import check_filters
from strata.gateway.caller import reader
from strata.pipeline.flow import Flow
from strata.pipeline.stage import Stage
from strata.routing.config import RetrievalConfig

log = logging.getLogger(__name__)


@dataclass
class Retrieval:
    """What one request retrieves: the route's ``rag:`` or a Responses ``file_search`` tool; ``hits`` are set
    by the stage (for the Responses output items)."""

    cfg: RetrievalConfig
    filters: dict[str, Any] | None = None
    query: str = ""
    hits: list[Any] = field(default_factory=list)


class Retrieve(Stage):
    name = "strata.retrieve"

    async def before(self, flow: Flow) -> Response | None:
        route = flow.route
        if flow.retrieval is None:
            if route is None or route.rag is None or flow.surface.kind != "chat":
                return None
            flow.retrieval = Retrieval(route.rag)
        want: Retrieval = flow.retrieval
        body, call, state = flow.body, flow.call, flow.state
        assert body is not None and call.principal is not None and route is not None
        query = want.query = last_user_text(body.get("messages") or [])
        if not query:
            return None
        cfg = want.cfg
        stores = state.vector_stores
        if stores is None:
            raise InvalidRequest(f"route {route.name!r} has rag: but RAG is not enabled on this gateway")
        who = reader(call.principal, flow.request.headers, call.user)
        owner = call.principal.team
        colls = list(cfg.collections)
        for vs in cfg.vector_stores:
            colls.append(await asyncio.to_thread(stores.collection_named, owner, vs))
        if want.filters is not None:
            check_filters(want.filters)
        hits = await stores.rag.search(owner, colls, query, who, k=cfg.k, mode=cfg.mode, filters=want.filters,
                                       parent=call)
        hits = want.hits = [h for h in hits if cfg.min_score is None or h.score >= cfg.min_score][:cfg.k]
        if hits:
            body["messages"] = inject(body["messages"], cfg, hits)
        call.rag = {"query_chars": len(query), "mode": cfg.mode, "team": owner,
                    "chunks": [{"n": n, "chunk_id": h.chunk_id, "document_id": h.document_id,
                                "collection_id": h.collection_id, "score": round(float(h.score), 6)}
                               for n, h in enumerate(hits, 1)]}
        call.headers = {**(call.headers or {}),
                        "x-strata-rag-chunks": ",".join(f"{n}={h.chunk_id}" for n, h in enumerate(hits, 1))}
        if call.span is not None:
            call.span.set("strata.rag.chunks", [h.chunk_id for h in hits])
            call.span.set("strata.rag.documents", sorted({h.document_id for h in hits}))
            call.span.set("strata.rag.collections", colls)
            call.span.set("strata.rag.mode", cfg.mode)
        return None

    def after(self, flow: Flow) -> None:
        """Off the request path: the chunk -> request lineage edges, and the chunks' embeddings to drift
        detection (``observe.drift``'s ``record_retrieved``) when it is on."""
        call, state = flow.call, flow.state
        if not call.rag or not call.rag["chunks"] or state.vector_stores is None:
            return
        task = asyncio.get_running_loop().create_task(_record(state, call.route or "-", call.request_id, call.rag))
        state.tasks.background.add(task)
        task.add_done_callback(state.tasks.background.discard)


async def _record(state: Any, route: str, request_id: str, rag: dict[str, Any]) -> None:
    from strata.data.lineage import Edge

    stores, ids = state.vector_stores, [c["chunk_id"] for c in rag["chunks"]]
    try:
        if stores.lineage is not None:
            edges = [Edge("chunk", i, "request", request_id, "retrieved") for i in ids]
            await asyncio.to_thread(stores.lineage.add, edges, rag["team"])
        if state.observe.drift is not None:
            state.observe.drift.record_retrieved(route, await asyncio.to_thread(_vectors, stores.rag, ids))
    except Exception:  # bookkeeping: the answer was served
        log.exception("request %s: could not record its %d retrieved chunks", request_id, len(ids))


def _vectors(rag: Any, chunk_ids: list[str]) -> list[list[float]]:
    import numpy as np

    from strata.rag.store import chunk_key

    found = rag.store.chunks_by_key([chunk_key(i) for i in chunk_ids])
    return [np.frombuffer(chunk.vector, dtype="<f4").tolist() for chunk, _ in found.values() if chunk.vector]


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return text_of(m.get("content"))
    return ""


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text") or "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def passages(cfg: RetrievalConfig, hits: list[Any]) -> str:
    marker = cfg.citation_format.format(n=1)
    lines = [cfg.instructions.format(marker=marker), ""]
    for n, h in enumerate(hits, 1):
        lines.append(f"{cfg.citation_format.format(n=n)} ({h.document_name}) {h.text.strip()}")
        lines.append("")
    return "\n".join(lines).strip()


def inject(messages: list[dict[str, Any]], cfg: RetrievalConfig, hits: list[Any]) -> list[dict[str, Any]]:
    """The conversation with the passages: a system message after the caller's own system messages, or a
    preamble to the last user message."""
    text = passages(cfg, hits)
    if cfg.inject == "system":
        at = 0
        while at < len(messages) and messages[at].get("role") in ("system", "developer"):
            at += 1
        return [*messages[:at], {"role": "system", "content": text}, *messages[at:]]
    out = list(messages)
    for i in range(len(out) - 1, -1, -1):
        if out[i].get("role") == "user":
            out[i] = {**out[i], "content": f"{text}\n\nQuestion: {text_of(out[i].get('content'))}"}
            break
    return out
