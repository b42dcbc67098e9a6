"""The ``file_search`` tool of the Responses API: the request's vector stores are searched as the caller by
the ``retrieve`` stage (``pipeline.retrieve``), the passages injected with markers [1], [2], …; the answer
gets a ``file_search_call`` output item (with its results when ``include`` has
``file_search_call.results``) and ``file_citation`` annotations where the model cited a marker."""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

from strata.errors import InvalidRequest
from strata.pipeline.retrieve import Retrieval
from strata.routing.config import RetrievalConfig

MARKER = re.compile(r"\[(\d{1,2})\]")


def file_search(req: Any) -> Retrieval | None:
    """The retrieval a request's ``file_search`` tool asks for (at most one such tool), or None."""
    tools = [(i, t) for i, t in enumerate(req.tools or ()) if t.get("type") == "file_search"]
    if not tools:
        return None
    i, tool = tools[0]
    if len(tools) > 1:
        raise InvalidRequest("At most one file_search tool per request.", param=f"tools[{tools[1][0]}]")
    if req.stream:
        raise InvalidRequest("file_search is not supported with stream: true yet.", param="stream")
    ids = tool.get("vector_store_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(v, str) and v for v in ids):
        raise InvalidRequest("file_search needs vector_store_ids: a non-empty list of vector store ids.",
                             param=f"tools[{i}].vector_store_ids")
    ranking = tool.get("ranking_options") if isinstance(tool.get("ranking_options"), dict) else {}
    filters = tool.get("filters")
    if filters is not None and not isinstance(filters, dict):
        raise InvalidRequest("filters is an object.", param=f"tools[{i}].filters")
    try:
        cfg = RetrievalConfig(vector_stores=ids, k=tool.get("max_num_results", 10),
                              min_score=ranking.get("score_threshold"))
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidRequest(f"file_search: {err['msg']}", param=f"tools[{i}].max_num_results") from None
    return Retrieval(cfg, filters)


def search_item(retrieval: Retrieval, item_id: str, with_results: bool) -> dict[str, Any]:
    results = [{"file_id": h.document_id, "filename": h.document_name, "score": h.score, "text": h.text,
                "attributes": h.attributes or {}} for h in retrieval.hits] if with_results else None
    return {"type": "file_search_call", "id": item_id, "status": "completed",
            "queries": [retrieval.query] if retrieval.query else [], "results": results}


def citations(retrieval: Retrieval, text: str) -> list[dict[str, Any]]:
    """A ``file_citation`` for each marker [n] in the answer that names an injected passage, at its place."""
    out = []
    for m in MARKER.finditer(text):
        n = int(m.group(1))
        if 1 <= n <= len(retrieval.hits):
            hit = retrieval.hits[n - 1]
            out.append({"type": "file_citation", "file_id": hit.document_id, "filename": hit.document_name,
                        "index": m.start()})
    return out
