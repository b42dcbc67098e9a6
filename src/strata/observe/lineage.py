"""Lineage across layers for one request or one dataset version (``strata lineage show``).

A RAG request's chunks -> their documents -> the file or dataset version they came from -> the pipeline
steps that made that version ("up"); a dataset version -> its documents -> chunks -> the requests that used
them ("down"). The edges are DS's graph (``data.lineage``); this module resolves the start and walks it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from strata.data.lineage import Lineage
from strata.data.store import DatasetVersion
from strata.errors import NotFound
from strata.observe.feedback import find_request


def request_lineage(db: Engine, request_id: str, teams: frozenset[str] | None) -> dict[str, Any]:
    """Up from a request: the chunks it used and everything they came from. ``teams``: the key's scope."""
    served = find_request(db, request_id)
    if served is None or (teams is not None and served.get("team") not in teams):
        raise NotFound(f"No request with id {request_id!r}.", param="ref", code="request_not_found")
    return walk(db, "request", request_id, {"request_id": request_id, "team": served.get("team"),
                                            "route": served.get("route")})


def version_lineage(db: Engine, version: DatasetVersion) -> dict[str, Any]:
    """Both ways from a dataset version (``data.store.DatasetVersion``)."""
    return walk(db, "dataset_version", version.id, {"dataset": version.dataset, "version": version.number,
                                                    "team": version.team, "content_hash": version.content_hash})


def walk(db: Engine, kind: str, ident: str, about: dict[str, Any]) -> dict[str, Any]:
    graph = Lineage(db)
    up = [h.view() for h in graph.walk(kind, ident, "up")]
    down = [h.view() for h in graph.walk(kind, ident, "down")]
    return {"start": {"kind": kind, "id": ident, **about}, "up": up, "down": down,
            "summary": {"up": _count(up, "src_kind"), "down": _count(down, "dst_kind")}}


def _count(hops: list[dict[str, Any]], side: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in hops:
        out[h[side]] = out.get(h[side], 0) + 1
    return out
