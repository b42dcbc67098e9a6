"""Lineage across layers for one request or one dataset version (``strata lineage show``).

A RAG request's chunks -> their documents -> the file or dataset record they came from -> that record's
dataset version -> the pipeline run and step runs that made it ("up"); a dataset version -> its records ->
the documents ingested from them -> chunks -> the requests that used them ("down"). The edges are DS's graph
(``data.lineage``); a record's version is implied by its node id (``<version id>/<record id>``), so the walk
adds that containment hop itself.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from strata.data.lineage import Direction, Edge, Lineage
from strata.data.store import DatasetVersion
from strata.data.tables import LineageEdge
from strata.errors import NotFound
from strata.observe.feedback import find_request

Node = tuple[str, str]


def request_lineage(db: Engine, request_id: str, teams: frozenset[str] | None) -> dict[str, Any]:
    """Both ways from a request (down is empty today). ``teams``: the key's scope (None: all)."""
    served = find_request(db, request_id)
    if served is None or (teams is not None and served.get("team") not in teams):
        raise NotFound(f"No request with id {request_id!r}.", param="ref", code="request_not_found")
    return walk(db, "request", request_id, {"request_id": request_id, "team": served.get("team"),
                                            "route": served.get("route")})


def version_lineage(db: Engine, version: DatasetVersion) -> dict[str, Any]:
    return walk(db, "dataset_version", version.id, {"dataset": version.dataset, "version": version.number,
                                                    "team": version.team, "content_hash": version.content_hash})


def walk(db: Engine, kind: str, ident: str, about: dict[str, Any]) -> dict[str, Any]:
    up, down = hops(db, (kind, ident), "up"), hops(db, (kind, ident), "down")
    return {"start": {"kind": kind, "id": ident, **about}, "up": up, "down": down,
            "summary": {"up": _count(up, "src_kind"), "down": _count(down, "dst_kind")}}


def hops(db: Engine, start: Node, direction: Direction, max_depth: int = 16,
         limit: int = 10_000) -> list[dict[str, Any]]:
    """Breadth first from ``start``, each edge once, with the record-in-version hops added."""
    graph = Lineage(db)
    out: list[dict[str, Any]] = []
    seen_edges: set[Edge] = set()
    seen = {start}
    frontier = [start]
    for depth in range(1, max_depth + 1):
        if not frontier or len(out) >= limit:
            break
        nxt: list[Node] = []
        for e in [*graph.neighbours(frontier, direction), *_containment(db, frontier, direction)]:
            if e in seen_edges:
                continue
            seen_edges.add(e)
            out.append({"depth": depth, "src_kind": e.src_kind, "src_id": e.src_id, "dst_kind": e.dst_kind,
                        "dst_id": e.dst_id, "relation": e.relation})
            node = (e.src_kind, e.src_id) if direction == "up" else (e.dst_kind, e.dst_id)
            if node not in seen:
                seen.add(node)
                nxt.append(node)
        frontier = nxt
    return out[:limit]


def _containment(db: Engine, frontier: list[Node], direction: Direction) -> list[Edge]:
    """dataset_version -> record edges implied by record node ids (``<version id>/<record id>``)."""
    if direction == "up":
        return [Edge("dataset_version", ident.split("/", 1)[0], "record", ident, "contains")
                for kind, ident in frontier if kind == "record" and "/" in ident]
    versions = [ident for kind, ident in frontier if kind == "dataset_version"]
    if not versions:
        return []
    out = []
    with db.connect() as conn:
        for v in versions:
            q = (select(LineageEdge.src_id).where(LineageEdge.src_kind == "record",
                                                  LineageEdge.src_id.startswith(f"{v}/", autoescape=True))
                 .distinct())
            out += [Edge("dataset_version", v, "record", node, "contains") for node in conn.scalars(q)]
    return out


def _count(rows: list[dict[str, Any]], side: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for h in rows:
        out[h[side]] = out.get(h[side], 0) + 1
    return out
