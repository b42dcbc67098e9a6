"""Lineage: one graph of ``(src_kind, src_id) -> (dst_kind, dst_id)`` edges over every layer.

Kinds: ``record`` (id ``<version id>/<record id>``, see ``record_node``), ``dataset_version``, ``pipeline_run``,
``step_run`` (written by pipelines); ``document``, ``chunk`` (RAG), ``request`` (the gateway). "up" walks from
a thing to what it came from, "down" to what was made from it. Writers call ``Lineage.add``; readers
``Lineage.walk`` / ``record_lineage``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select
from sqlalchemy.orm import Session

from strata.data.tables import LineageEdge
from strata.errors import InvalidRequest

Direction = Literal["up", "down"]
BATCH = 500


@dataclass(frozen=True, slots=True)
class Edge:
    src_kind: str
    src_id: str
    dst_kind: str
    dst_id: str
    relation: str | None = None


@dataclass(frozen=True, slots=True)
class Hop:
    """One edge met at ``depth`` (1: next to the start) while walking."""

    depth: int
    edge: Edge

    def view(self) -> dict[str, Any]:
        return {"depth": self.depth, **asdict(self.edge)}


def record_node(version_id: str, record_id: str) -> str:
    """The lineage id of a record of a version."""
    return f"{version_id}/{record_id}"


class Lineage:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def add(self, edges: Iterable[Edge], team: str | None = None, conn: Connection | None = None) -> int:
        """Write edges (in the caller's transaction when ``conn`` is given); returns how many."""
        now = datetime.now(UTC)
        rows = [{**asdict(e), "team": team, "created_at": now} for e in edges]
        if not rows:
            return 0
        if conn is not None:
            _insert(conn, rows)
        else:
            with self.db.begin() as c:
                _insert(c, rows)
        return len(rows)

    def neighbours(self, nodes: Sequence[tuple[str, str]], direction: Direction) -> list[Edge]:
        """The edges one step up (into ``nodes``) or down (out of them)."""
        kind_col, id_col = ((LineageEdge.dst_kind, LineageEdge.dst_id) if direction == "up"
                            else (LineageEdge.src_kind, LineageEdge.src_id))
        out: list[Edge] = []
        by_kind: dict[str, list[str]] = {}
        for kind, ident in nodes:
            by_kind.setdefault(kind, []).append(ident)
        with Session(self.db) as conn:
            for kind, ids in by_kind.items():
                for i in range(0, len(ids), BATCH):
                    q = select(LineageEdge).where(and_(kind_col == kind, id_col.in_(ids[i:i + BATCH])))
                    out.extend(_edge(r) for r in conn.scalars(q.order_by(LineageEdge.id)))
        return out

    def walk(self, kind: str, ident: str, direction: Direction = "up", max_depth: int = 32,
             limit: int = 100_000) -> list[Hop]:
        """Every edge reachable from ``(kind, ident)`` in ``direction``, breadth first, each once."""
        if direction not in ("up", "down"):
            raise InvalidRequest("direction is 'up' or 'down'", param="direction")
        hops: list[Hop] = []
        seen_edges: set[Edge] = set()
        seen_nodes = {(kind, ident)}
        frontier = [(kind, ident)]
        for depth in range(1, max_depth + 1):
            if not frontier or len(hops) >= limit:
                break
            nxt: list[tuple[str, str]] = []
            for e in self.neighbours(frontier, direction):
                if e in seen_edges:
                    continue
                seen_edges.add(e)
                hops.append(Hop(depth, e))
                node = (e.src_kind, e.src_id) if direction == "up" else (e.dst_kind, e.dst_id)
                if node not in seen_nodes:
                    seen_nodes.add(node)
                    nxt.append(node)
            frontier = nxt
        return hops[:limit]

    def delete_for(self, kind: str, ident: str) -> int:
        """Remove every edge touching a node (e.g. a deleted document's chunks)."""
        with self.db.begin() as conn:
            q = delete(LineageEdge).where(or_(
                and_(LineageEdge.src_kind == kind, LineageEdge.src_id == ident),
                and_(LineageEdge.dst_kind == kind, LineageEdge.dst_id == ident)))
            return conn.execute(q).rowcount or 0


def record_lineage(db: Engine, kind: str, ident: str, direction: Direction = "up") -> list[Hop]:
    """The contract's reader: ``record_lineage(db, "record", record_node(v, r), "up")``."""
    return Lineage(db).walk(kind, ident, direction)


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), BATCH):
        conn.execute(insert(LineageEdge), rows[i:i + BATCH])


def _edge(row: LineageEdge) -> Edge:
    return Edge(row.src_kind, row.src_id, row.dst_kind, row.dst_id, row.relation)
