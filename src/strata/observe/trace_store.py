"""Strata's own trace store: the newest traces in the ``traces`` table, for ``strata traces`` and
``GET /admin/traces``, so a slow or failed request can be looked at without running a collector.

A ``TraceSink`` (``observe.tracing``): the exporter thread hands it a batch, written as multi-row INSERTs
in one transaction (the ledger's reason, ``observe.ledger_sql``: one GIL hand-off per statement, not per
row). The table is kept at ``max_traces``: once about a tenth more have been written, a count and, if
needed, one DELETE of the oldest; so between prunes it holds at most ~110 % of ``max_traces``.

One row per request. Requests that continue one client ``traceparent`` share a trace id, so a trace id
can name several rows; ``get`` merges them into one tree (a request id names one request).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import deque
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, func, or_, select

from strata.observe.ledger_sql import chunk_sizes
from strata.observe.tracing import Trace
from strata.store.tables import TraceRow

log = logging.getLogger(__name__)
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
COLUMNS = ["trace_id", "request_id", "started_at", "duration_ms", "name", "route", "status", "spans"]
SUMMARY = [getattr(TraceRow, c) for c in COLUMNS if c != "spans"]
MAX_LIMIT = 1000
LATE = "quality "  # the name of a request's late span row (``observe.quality``): merged by ``get``, not listed
Rows = list[dict[str, Any]]  # ``TraceStore.list`` hides the builtin inside the class
Entry = tuple[str, str, datetime, float, str, str | None, int | None, bytes]  # COLUMNS, spans as JSON


class TraceStore:
    """``TraceStore(max_traces)``: the newest traces of this process, in memory; ``TraceStore(max_traces, db)``:
    in the database's ``traces`` table (shared by replicas, kept across restarts).

    In memory a trace is kept as one flat tuple of plain values with its spans as JSON bytes: objects the
    garbage collector does not track. Kept as recorded (Span objects, their dicts), 10,000 traces were about
    140,000 tracked objects, and full collections stopped the event loop for ~100 ms twice a second under load
    (docs/benchmarks.md)."""

    def __init__(self, max_traces: int, db: Engine | None = None) -> None:
        self.db = db
        self.max_traces = max_traces
        self.slack = max(1, max_traces // 10)  # rows written between two counts
        self._unchecked = self.slack  # count at the first export: the table may hold a previous run's rows
        self._lock = threading.Lock()  # export (exporter thread) against close (shutdown) and reads
        self._memory: deque[Entry] = deque(maxlen=max_traces)

    # --- write side (the exporter's thread) --------------------------------------------------------------

    def export(self, traces: Sequence[Trace]) -> None:
        entries = [_entry(t) for t in traces if t.spans]
        if self.db is None:
            with self._lock:
                self._memory.extend(entries)
            return
        if not entries:
            return
        rows = [dict(zip(COLUMNS, (*e[:-1], e[-1].decode()), strict=True)) for e in entries]
        with self._lock, self.db.begin() as conn:
            _insert(conn, rows)
            self._unchecked += len(rows)
            if self._unchecked >= self.slack:
                self._prune(conn)

    def close(self) -> None:
        if self.db is None:
            return
        with self._lock, self.db.begin() as conn:
            self._prune(conn)

    def _prune(self, conn: Connection) -> None:
        """Delete all but the newest ``max_traces`` rows (by start, then insertion order)."""
        self._unchecked = 0
        if (conn.scalar(select(func.count()).select_from(TraceRow)) or 0) <= self.max_traces:
            return
        cut = conn.execute(select(TraceRow.started_at, TraceRow.id)
                           .order_by(TraceRow.started_at.desc(), TraceRow.id.desc())
                           .offset(self.max_traces).limit(1)).first()
        if cut is not None:
            gone = conn.execute(delete(TraceRow).where(or_(
                TraceRow.started_at < cut.started_at,
                (TraceRow.started_at == cut.started_at) & (TraceRow.id <= cut.id))))
            log.debug("trace store: pruned %d traces", gone.rowcount)

    # --- read side (admin API, CLI) ----------------------------------------------------------------------

    def list(self, request_id: str | None = None, route: str | None = None, status: int | None = None,
             min_duration_ms: float | None = None, limit: int = 50, teams: Collection[str] | None = None) -> Rows:
        """Summaries of the newest traces that match, newest first (no spans). ``teams``: only traces of
        requests made by these teams' keys (the ``strata.team`` span attribute), read from the spans. A
        request's late quality span (its own row) is not a trace of its own here."""
        limit = max(1, min(limit, MAX_LIMIT))
        if self.db is None:
            with self._lock:
                kept: Rows = [dict(zip(COLUMNS, e, strict=True)) for e in self._memory]
            found = [r for r in reversed(kept) if not r["name"].startswith(LATE)
                     and (request_id is None or r["request_id"] == request_id)
                     and (route is None or r["route"] == route) and (status is None or r["status"] == status)
                     and (min_duration_ms is None or r["duration_ms"] >= min_duration_ms)
                     and (teams is None or team_of(_span_dicts(r["spans"])) in teams)]
            found.sort(key=lambda r: r["started_at"], reverse=True)
            return [_summary(r) for r in found[:limit]]
        q = select(*SUMMARY, TraceRow.spans) if teams is not None else select(*SUMMARY)
        q = q.where(TraceRow.name.notlike(LATE + "%"))
        if request_id is not None:
            q = q.where(TraceRow.request_id == request_id)
        if route is not None:
            q = q.where(TraceRow.route == route)
        if status is not None:
            q = q.where(TraceRow.status == status)
        if min_duration_ms is not None:
            q = q.where(TraceRow.duration_ms >= min_duration_ms)
        q = q.order_by(TraceRow.started_at.desc(), TraceRow.id.desc())
        with self.db.connect() as conn:
            if teams is None:
                return [_summary(r._mapping) for r in conn.execute(q.limit(limit))]
            rows = (r._mapping for r in conn.execute(q) if team_of(_span_dicts(r.spans)) in teams)
            return [_summary(r) for r, _ in zip(rows, range(limit), strict=False)]

    def get(self, ident: str) -> dict[str, Any] | None:
        """A trace by its 32-hex trace id or by a request id: its summary, ``spans`` and ``tree``."""
        rows = self._memory_rows(ident) if self.db is None else self._db_rows(ident)
        if not rows:
            return None
        spans = sorted((s for r in rows for s in _span_dicts(r["spans"])), key=lambda s: s["start_ns"])
        out = _summary(rows[0])
        start = min(s["start_ns"] for s in spans)
        end = max(s["end_ns"] or s["start_ns"] for s in spans)
        requests = list(dict.fromkeys(r["request_id"] for r in rows))  # a late quality span's row repeats one
        if len(requests) > 1:
            out["duration_ms"] = (end - start) / 1e6
        out["requests"] = requests
        out["spans"] = spans
        out["tree"] = tree(spans, start)
        return out

    def _memory_rows(self, ident: str) -> Rows:
        with self._lock:
            kept = list(self._memory)
        found = [e for e in kept if e[0] == ident] if TRACE_ID.match(ident) else []
        found = found or [e for e in kept if e[1] == ident]  # the request's, and its late quality span's
        rows = [dict(zip(COLUMNS, e, strict=True)) for e in found]
        return sorted(rows, key=lambda r: r["started_at"])

    def _db_rows(self, ident: str) -> Rows:
        assert self.db is not None
        cols = [*SUMMARY, TraceRow.spans]
        order = (TraceRow.started_at, TraceRow.id)
        with self.db.connect() as conn:
            rows: Sequence[Any] = []
            if TRACE_ID.match(ident):
                rows = conn.execute(select(*cols).where(TraceRow.trace_id == ident).order_by(*order)).all()
            if not rows:  # the request's row, and its late quality span's (``observe.quality``)
                rows = conn.execute(select(*cols).where(TraceRow.request_id == ident).order_by(*order)).all()
        return [dict(r._mapping) for r in rows]


def team_of(spans: list[dict[str, Any]]) -> str | None:
    """The team whose key made the request (the ``strata.team`` attribute of its root span)."""
    for s in spans:
        team = (s.get("attributes") or {}).get("strata.team")
        if team is not None:
            return str(team)
    return None


def tree(spans: list[dict[str, Any]], start_ns: int) -> list[dict[str, Any]]:
    """Spans (``Span.to_dict()``) nested by ``parent_id``, each with ``offset_ms`` from ``start_ns`` and
    ``duration_ms``; a span whose parent is not here (a root, or the client's span) is a top node."""
    nodes = {s["span_id"]: _node(s, start_ns) for s in spans}
    top: list[dict[str, Any]] = []
    for s in spans:  # sorted by start: children come out in start order
        parent = nodes.get(s["parent_id"]) if s["parent_id"] else None
        (parent["children"] if parent is not None else top).append(nodes[s["span_id"]])
    return top


def _node(s: dict[str, Any], start_ns: int) -> dict[str, Any]:
    return {"name": s["name"], "span_id": s["span_id"], "kind": s["kind"],
            "offset_ms": (s["start_ns"] - start_ns) / 1e6,
            "duration_ms": (s["end_ns"] - s["start_ns"]) / 1e6 if s["end_ns"] else None,
            "status": s["status"], "message": s["message"], "attributes": s["attributes"], "children": []}


def _summary(m: Any) -> dict[str, Any]:
    at: datetime = m["started_at"]
    return {"trace_id": m["trace_id"], "request_id": m["request_id"],
            "started_at": (at if at.tzinfo else at.replace(tzinfo=UTC)).isoformat(),
            "duration_ms": m["duration_ms"], "name": m["name"], "route": m["route"], "status": m["status"]}


def _entry(trace: Trace) -> Entry:
    """A trace as stored: its summary columns and its spans as JSON (``COLUMNS`` order)."""
    root = trace.root
    end = root.end_ns or max(s.end_ns or s.start_ns for s in trace.spans)
    route = root.attrs.get("strata.route", root.attrs.get("gen_ai.request.model"))
    status = root.attrs.get("http.response.status_code")
    spans = orjson.dumps([(s.name, s.span_id, s.parent_id, s.kind, s.start_ns, s.end_ns, s.attrs, s.status,
                           s.message) for s in trace.spans])
    return (trace.hex_id, trace.request_id[:128], datetime.fromtimestamp(root.start_ns / 1e9, UTC),
            (end - root.start_ns) / 1e6, root.name[:200], str(route)[:200] if route is not None else None,
            status if isinstance(status, int) and not isinstance(status, bool) else None, spans)


def _span_dicts(raw: Any) -> list[dict[str, Any]]:
    """Stored spans (JSON, or as the database's JSON column returns it) as ``Span.to_dict()`` gives them."""
    if isinstance(raw, bytes | str):
        raw = orjson.loads(raw)
    return [s if isinstance(s, dict) else {  # dicts: rows written before spans were stored as arrays
        "name": s[0], "span_id": f"{s[1]:016x}", "parent_id": f"{s[2]:016x}" if s[2] else None, "kind": s[3],
        "start_ns": s[4], "end_ns": s[5], "attributes": s[6], "status": s[7], "message": s[8]} for s in raw]


def _insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Multi-row INSERTs of a few fixed sizes (``ledger_sql.chunk_sizes``: a bounded set of statement texts)."""
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        placeholder = "(" + ",".join("?" for _ in COLUMNS) + ")"
    else:
        placeholder = "(" + ",".join("CAST(%s AS JSON)" if c == "spans" else "%s" for c in COLUMNS) + ")"
    quoted = ",".join(conn.dialect.identifier_preparer.quote(c) for c in COLUMNS)
    start = 0
    for size in chunk_sizes(len(rows)):
        params: list[Any] = []
        for row in rows[start:start + size]:
            if sqlite:  # SQLAlchemy's SQLite DateTime format (naive UTC), so comparisons stay textual
                row = {**row, "started_at": row["started_at"].strftime("%Y-%m-%d %H:%M:%S.%f")}
            params.extend(row[c] for c in COLUMNS)
        start += size
        conn.exec_driver_sql(f"INSERT INTO traces ({quoted}) VALUES " + ",".join([placeholder] * size),
                             tuple(params))
