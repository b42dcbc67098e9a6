"""The trace store (``observe.trace_store``) on SQLite, PostgreSQL and in memory: what ``strata traces`` and
``GET /admin/traces`` read back is the newest ``max_traces`` traces, found by trace id or request id, as a tree."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from strata.observe.trace_store import TraceStore
from strata.observe.tracing import CLIENT, SERVER, Trace
from strata.store.db import open_database


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    yield engine
    engine.dispose()


def request_trace(n: int, status: int = 200, route: str = "chat", trace_id: int | None = None) -> Trace:
    """A request's trace as the pipeline makes it: root, stages, one failed and one good attempt."""
    trace = Trace(trace_id or (n + 1) << 64, 0, f"req_{n}")
    root = trace.start(f"chat {route}", None, SERVER, {"strata.route": route, "http.response.status_code": status})
    auth = trace.start("strata.authenticate", root)
    auth.end()
    call = trace.start("strata.call", root)
    bad = trace.start("chat m", call, CLIENT, {"strata.deployment": "bad", "strata.attempt": 1})
    bad.end("bad_gateway")
    good = trace.start("chat m", call, CLIENT, {"strata.deployment": "good", "strata.attempt": 2})
    good.end()
    call.end()
    root.end()
    return trace


@pytest.fixture(params=["database", "memory"])
def store(request: pytest.FixtureRequest, db: Engine) -> TraceStore:
    return TraceStore(3, db if request.param == "database" else None)


def test_the_newest_traces_are_kept_and_listed_newest_first(store: TraceStore) -> None:
    for n in range(5):
        store.export([request_trace(n, status=502 if n == 3 else 200)])
        time.sleep(0.002)
    store.close()
    assert [t["request_id"] for t in store.list()] == ["req_4", "req_3", "req_2"]
    assert [t["request_id"] for t in store.list(status=502)] == ["req_3"]
    assert store.list(route="other") == [] and len(store.list(limit=1)) == 1
    assert store.get("req_0") is None, "pruned"


def test_a_trace_reads_back_as_a_tree_by_trace_id_or_request_id(store: TraceStore) -> None:
    trace = request_trace(7)
    store.export([trace])
    by_id, by_request = store.get(trace.hex_id), store.get("req_7")
    assert by_id is not None and by_id == by_request
    assert (by_id["trace_id"], by_id["name"], by_id["route"], by_id["status"]) == (trace.hex_id, "chat chat", "chat",
                                                                                  200)
    (root,) = by_id["tree"]
    assert [c["name"] for c in root["children"]] == ["strata.authenticate", "strata.call"]
    attempts = root["children"][1]["children"]
    assert [(a["attributes"]["strata.deployment"], a["status"], a["message"]) for a in attempts] == [
        ("bad", 2, "bad_gateway"), ("good", 0, None)]
    assert root["offset_ms"] == 0 and all(a["offset_ms"] >= 0 and a["duration_ms"] >= 0 for a in attempts)
    assert len(by_id["spans"]) == 5


def test_requests_continuing_one_client_trace_read_back_together(store: TraceStore) -> None:
    shared = 0x4BF92F3577B34DA6A3CE929D0E0E4736
    store.export([request_trace(1, trace_id=shared), request_trace(2, trace_id=shared)])
    both = store.get(f"{shared:032x}")
    assert both is not None and both["requests"] == ["req_1", "req_2"] and len(both["tree"]) == 2
    one = store.get("req_2")
    assert one is not None and one["requests"] == ["req_2"] and len(one["tree"]) == 1
