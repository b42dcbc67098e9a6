"""SLOs per route: the objectives reach ``/metrics`` (for the shipped burn-rate rules), and ``strata slo status`` /
``GET /admin/slo`` compute SLI, error budget left and burn rates from the ledger.

- From a ledger of known rows (SQLite and PostgreSQL), at a fixed ``now``: each window counts only its rows.
- End to end: a known share of requests fails (poisoned, the upstream answers 500) or is slow (the upstream
  waits 1 s against a 500 ms threshold); the CLI's numbers are exactly those shares; a team-scoped key and a
  member key are refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session

from strata.config.settings import load_settings
from strata.observe.slo import slo_status
from strata.store.db import open_database
from strata.store.tables import LedgerRow
from tests.servers import StrataProcess, cli, finished, openai_route, wait_for
from tests.upstreams import POISON, FaultyUpstream

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def rows(route: str, n: int, ago: timedelta, errors: int = 0, slow: int = 0) -> list[LedgerRow]:
    """``n`` ledger rows of ``route`` that started ``ago`` before NOW: the first ``errors`` answered 502, the
    last ``slow`` took 1.5 s (the others 100 ms)."""
    at = NOW - ago
    return [LedgerRow(request_id=f"r{ago.total_seconds()}-{i}", started_at=at, finished_at=at, endpoint="chat",
                      route=route, status=502 if i < errors else 200,
                      latency_ms=1500.0 if i >= n - slow else 100.0) for i in range(n)]


def test_status_counts_each_window_from_the_ledger(db_url: str, tmp_path: Path) -> None:
    engine = open_database(db_url)
    with Session(engine) as s, s.begin():
        s.add_all([*rows("chat", 100, timedelta(minutes=10), errors=10, slow=20),
                   *rows("chat", 100, timedelta(hours=3)),
                   *rows("chat", 100, timedelta(days=5), errors=5),
                   *rows("chat", 100, timedelta(days=10), errors=100),  # before the 7-day SLO window
                   *rows("other", 50, timedelta(minutes=10), errors=50)])  # a route without an SLO
    chat = openai_route("chat", "http://127.0.0.1:9/v1", "m") | {
        "slo": {"availability": 0.99, "latency": {"threshold_ms": 1000, "objective": 0.9}, "window": "7d"}}
    settings = load_settings(data_dir=tmp_path, routes=[chat, openai_route("other", "http://127.0.0.1:9/v1", "m")])

    [status] = slo_status(engine, settings.routes, now=NOW)
    assert (status["route"], status["window"]) == ("chat", "7d")
    availability, latency = status["objectives"]
    assert availability["slo"] == "availability"
    assert (availability["requests"], availability["bad"]) == (300, 15)
    assert availability["sli"] == pytest.approx(0.95)
    assert availability["budget_remaining"] == pytest.approx(1 - 0.05 / 0.01)  # -4: spent five times over
    assert availability["met"] is False
    assert availability["burn_rates"] == pytest.approx({"1h": 10.0, "6h": 5.0, "3d": 5.0})
    assert (latency["slo"], latency["threshold_ms"], latency["bad"]) == ("latency", 1000, 20)
    assert latency["sli"] == pytest.approx(280 / 300)
    assert latency["burn_rates"] == pytest.approx({"1h": 2.0, "6h": 1.0, "3d": 1.0})
    engine.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    """40 requests on route chat: 4 fail (10%), 2 are slower than the 500 ms threshold (5%)."""
    with FaultyUpstream() as upstream:
        upstream.first_delay = 1.0
        route = openai_route("chat", upstream.base_url, "ok") | {
            "retries": 0, "breaker": {"caller_failures": 0, "consecutive_failures": 100},
            "slo": {"availability": 0.99, "latency": {"threshold_ms": 500, "objective": 0.95}}}
        proc = StrataProcess(tmp_path_factory.mktemp("slo"), {"routes": [route]}).start(60)
        try:
            client = proc.client()
            for i in range(40):
                upstream.mode = "slow-first" if i in (20, 21) else None
                content = f"{POISON} {i}" if i < 4 else f"question {i}"
                try:
                    client.chat.completions.create(model="chat", messages=[{"role": "user", "content": content}])
                except Exception:
                    assert i < 4
            upstream.mode = None
            yield proc
        finally:
            proc.stop()


def test_slo_status_matches_the_injected_error_and_slow_shares(served: StrataProcess) -> None:
    wait_for(lambda: served.admin("GET", "/admin/slo").json()["data"][0]["objectives"][0]["requests"] == 40, 20,
             "40 ledger rows of route chat")
    as_json, as_table = cli(served, "slo", "status", "--json"), cli(served, "slo", "status")  # run side by side
    done, table = finished(as_json), finished(as_table)
    assert done.returncode == 0, done.stderr
    [chat] = json.loads(done.stdout)
    availability, latency = chat["objectives"]
    assert (availability["objective"], availability["requests"], availability["bad"]) == (0.99, 40, 4)
    assert availability["sli"] == pytest.approx(0.9)
    assert availability["burn_rates"]["1h"] == pytest.approx(10.0)  # 10% errors against a 1% budget
    assert availability["budget_remaining"] == pytest.approx(-9.0)
    assert (latency["objective"], latency["threshold_ms"], latency["bad"]) == (0.95, 500, 2)
    assert latency["sli"] == pytest.approx(0.95)
    assert latency["burn_rates"]["1h"] == pytest.approx(1.0)  # exactly on budget
    assert table.returncode == 0 and "chat" in table.stdout and "10.0x" in table.stdout, table.stdout


def test_objectives_and_slow_requests_are_metrics(served: StrataProcess) -> None:
    assert served.metric("strata_slo_objective", route="chat", slo="availability") == 0.99
    assert served.metric("strata_slo_objective", route="chat", slo="latency") == 0.95
    assert served.metric("strata_slo_latency_threshold_seconds", route="chat") == 0.5
    assert served.metric("strata_slow_requests_total", route="chat") == 2


def test_only_unscoped_readers_see_slo_status(served: StrataProcess) -> None:
    def key(**body: Any) -> str:
        r = served.admin("POST", "/admin/keys", json={"name": "k", **body})
        assert r.status_code == 200, r.text
        return str(r.json()["key"])

    for k, code in ((key(team="a", role="analyst", scopes={"teams": ["a"]}), "scope_denied"),
                    (key(team="a"), "permission_denied")):
        r = httpx.get(served.url + "/admin/slo", headers={"Authorization": f"Bearer {k}"}, timeout=10)
        assert r.status_code == 403 and r.json()["error"]["code"] == code, r.text
    analyst = key(role="analyst")
    r = httpx.get(served.url + "/admin/slo?route=chat", headers={"Authorization": f"Bearer {analyst}"}, timeout=10)
    assert r.status_code == 200 and [x["route"] for x in r.json()["data"]] == ["chat"]
    r = httpx.get(served.url + "/admin/slo?route=nope", headers={"Authorization": f"Bearer {analyst}"}, timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "route_not_found"
