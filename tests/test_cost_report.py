"""Cost reports as an operator sees them: spend by group with shares, cache savings, week-over-week
change and the top cost drivers, as a table, JSON or CSV; and a ``cost_anomaly`` event when a group's
spend jumps week over week."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from strata.store.db import open_database
from strata.store.tables import LedgerRow
from tests.servers import ledger_rows
from tests.test_cli import assert_one_line_error, strata
from tests.test_traffic import dep, eventually, gateway, route
from tests.upstreams import FaultyUpstream

PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
COST = (7 * 1000 + 3 * 2000) / 1e6


def history(data_dir: Path, rows: list[tuple[str, float, float]]) -> None:
    """Ledger rows from the past: (feature tag, days ago, cost)."""
    db = open_database(f"sqlite:///{data_dir / 'strata.db'}")
    now = datetime.now(UTC)
    with Session(db) as s, s.begin():
        for i, (feature, days, cost) in enumerate(rows):
            at = now - timedelta(days=days)
            s.add(LedgerRow(request_id=f"old-{i}", started_at=at, finished_at=at, endpoint="chat", team="admin",
                            tags={"feature": feature}, route="m", deployment="d", status=200, latency_ms=1.0,
                            cost_usd=cost))
    db.dispose()


@pytest.fixture
async def spent(tmp_path: Path) -> Path:
    """Search: one paid answer and two cache hits this week, one paid last week; chat: one this week."""
    with FaultyUpstream("cost") as up:
        r = route(dep("d", up, model="ok", price=PRICE), cache={"exact": True})
        async with gateway(tmp_path, r) as client:
            for feature in ("search", "search", "search", "chat"):
                body = {"model": "m", "messages": [{"role": "user", "content": f"hi {feature}"}], "temperature": 0}
                resp = await client.post("/v1/chat/completions", json=body,
                                         headers={"X-Strata-Tags": f"feature={feature}"})
                assert resp.status_code == 200, resp.text
            await eventually(lambda: len(ledger_rows(tmp_path)) == 4, "four ledger rows")
    history(tmp_path, [("search", 9, COST)])
    return tmp_path


def test_report_by_tag_with_shares_savings_and_week_over_week(spent: Path) -> None:
    p = strata("cost", "report", "--by", "tag:feature", "--since", "30d", "--data-dir", str(spent), "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    groups = {g["group"]: g for g in report["groups"]}
    search, chat = groups["search"], groups["chat"]
    # this week: one search answer paid, two served from the cache (saved), one chat answer paid
    assert search["requests"] == 4 and search["cost_usd"] == pytest.approx(2 * COST)
    assert search["saved_usd"] == pytest.approx(2 * COST)
    assert (search["this_week_usd"], search["last_week_usd"]) == (pytest.approx(COST), pytest.approx(COST))
    assert search["wow_change_pct"] == 0.0 and chat["wow_change_pct"] is None  # chat spent nothing last week
    assert search["share"] + chat["share"] == pytest.approx(1.0)
    assert report["totals"]["saved_usd"] == pytest.approx(2 * COST)
    assert report["groups"][0]["group"] == "search" and report["groups"][0]["driver"]


def test_week_over_week_change_and_drivers(tmp_path: Path) -> None:
    history(tmp_path, [("search", 1, 3.0), ("search", 2, 3.0), ("search", 9, 2.0), ("chat", 3, 0.5),
                       ("chat", 10, 1.0), ("misc", 2, 0.1)])
    p = strata("cost", "report", "--by", "tag:feature", "--since", "30d", "--data-dir", str(tmp_path), "--json")
    report = json.loads(p.stdout)
    g = {x["group"]: x for x in report["groups"]}
    assert g["search"]["wow_change_pct"] == 200.0 and g["chat"]["wow_change_pct"] == -50.0
    assert g["misc"]["wow_change_pct"] is None  # nothing last week
    assert [x["group"] for x in report["groups"] if x["driver"]] == ["search"]  # 8 of 9.6 USD > 80%
    assert report["totals"]["wow_change_pct"] == pytest.approx((6.6 - 3.0) / 3.0 * 100, abs=0.1)
    table = strata("cost", "report", "--by", "tag:feature", "--data-dir", str(tmp_path))
    assert "+200%" in table.stdout and "-50%" in table.stdout and "1 of 3 groups" in table.stdout
    rows = list(csv.DictReader(io.StringIO(strata("cost", "report", "--by", "tag:feature", "--csv",
                                                  "--data-dir", str(tmp_path)).stdout)))
    assert [r["group"] for r in rows] == ["search", "chat", "misc"]
    assert float(rows[0]["cost_usd"]) == pytest.approx(8.0) and rows[0]["driver"] == "True"


def test_bad_grouping_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(strata("cost", "report", "--by", "colour", "--data-dir", str(tmp_path)), "cannot group by")
    assert_one_line_error(strata("cost", "report", "--since", "forever", "--data-dir", str(tmp_path)), "invalid window")


async def test_a_jump_week_over_week_emits_one_cost_anomaly(tmp_path: Path) -> None:
    history(tmp_path, [("search", 1, 9.0), ("search", 8, 1.0), ("chat", 1, 1.0), ("chat", 8, 1.0)])
    with FaultyUpstream("cost") as up:
        settings: dict[str, Any] = {"cost_alerts": {"enabled": True, "by": "tag:feature", "threshold_pct": 100,
                                                    "min_usd": 1.0, "interval": 0.1}}
        async with gateway(tmp_path, route(dep("d", up, model="ok")), **settings) as client:
            async def anomalies() -> list[dict[str, Any]]:
                return (await client.get("/admin/events?kind=cost_anomaly")).json()["data"]

            found = await eventually(anomalies, "a cost_anomaly event")
            await asyncio.sleep(0.5)  # several more checks: still one event
            events = await anomalies()
            assert len(events) == 1 and events[0]["subject"] == "search"
            assert "+800%" in events[0]["message"], found
            report = (await client.get("/admin/cost?by=tag:feature&since=14d")).json()
            assert {g["group"] for g in report["groups"]} == {"search", "chat"}
