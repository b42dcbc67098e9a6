"""The store on SQLite and PostgreSQL: migrations, the key table, the ledger writer, usage reports."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from strata.errors import AuthenticationFailed, InvalidRequest, NotFound
from strata.governance.auth import Authenticator
from strata.governance.keys import KeyStore, hash_key
from strata.observe.ledger import LedgerWriter
from strata.observe.metrics import Metrics
from strata.observe.usage import usage_report
from strata.store.db import open_database
from strata.store.tables import LedgerRow


@pytest.fixture
def db(db_url: str) -> Iterator[Engine]:
    engine = open_database(db_url)
    yield engine
    engine.dispose()


def ledger_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(LedgerRow)) or 0)


def ledger_row(**kw: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"request_id": "req_" + os.urandom(6).hex(), "started_at": now,
            "finished_at": now, "endpoint": "chat", "key_id": "k1", "team": "t1", "user": None, "tags": {},
            "route": "r1", "deployment": "r1-dep", "engine": "openai", "model": "m", "stream": False,
            "prompt_tokens": 10, "completion_tokens": 5, "latency_ms": 12.0, "status": 200, "cost_usd": 0.01,
            **kw}


def writer(engine: Engine, tmp_path: Path, flush_interval: float = 60.0) -> LedgerWriter:
    return LedgerWriter(engine, Metrics(), flush_interval=flush_interval, batch_size=100,
                        spill_path=tmp_path / "ledger-spill.jsonl")


# --- migrations and keys -------------------------------------------------------------------------------------


def test_migrations_are_idempotent_and_keep_data(db_url: str) -> None:
    first = open_database(db_url)
    created = KeyStore(first).create("svc", team="search")
    first.dispose()
    second = open_database(db_url)
    try:
        found = KeyStore(second).find(hash_key(created.secret))
        assert found is not None and found.team == "search"
    finally:
        second.dispose()


def test_key_lifecycle(db: Engine) -> None:
    store = KeyStore(db)
    created = store.create("svc", team="search", allowed_routes=["b", "a", "a"])
    assert created.secret.startswith("sk-strata-")
    found = store.find(hash_key(created.secret))
    assert found is not None
    assert (found.key_id, found.name, found.team) == (created.principal.key_id, "svc", "search")
    assert found.allowed_routes == {"a", "b"} and not found.revoked
    assert store.find(hash_key("sk-strata-not-a-key")) is None

    rows = store.list()
    assert [p.key_id for _, p in rows] == [found.key_id]
    assert rows[0][0].key_hash != created.secret
    assert rows[0][0].created_at.tzinfo is not None  # SQLite hands back naive datetimes

    assert store.revoke(found.key_id).revoked
    assert store.revoke(found.key_id).revoked  # second revoke is harmless
    again = store.find(hash_key(created.secret))
    assert again is not None and again.revoked


def test_revoke_unknown_key_is_not_found(db: Engine) -> None:
    with pytest.raises(NotFound) as exc:
        KeyStore(db).revoke("no-such-key")
    assert exc.value.status == 404 and exc.value.code == "key_not_found"


@pytest.mark.parametrize("kwargs", [
    {"name": "svc", "expires_at": datetime.now(UTC) - timedelta(minutes=1)},
    {"name": "  "},
    {"name": "x" * 201},
    {"name": "svc", "team": "t" * 201},
])
def test_invalid_key_is_rejected(db: Engine, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        KeyStore(db).create(**kwargs)
    assert KeyStore(db).list() == []


def test_changes_since_returns_only_changed_keys(db: Engine) -> None:
    store = KeyStore(db)
    a, b = store.create("a"), store.create("b")
    seq, everything = store.changes_since(0)
    assert set(everything) == {hash_key(a.secret), hash_key(b.secret)}
    assert store.changes_since(seq) == (seq, {})

    store.revoke(a.principal.key_id)
    seq2, changed = store.changes_since(seq)
    assert seq2 > seq
    assert list(changed) == [hash_key(a.secret)] and changed[hash_key(a.secret)].revoked

    store.revoke(a.principal.key_id)  # already revoked: nothing new to sync
    assert store.changes_since(seq2) == (seq2, {})


async def test_no_revocation_is_missed_by_a_concurrent_sync(db_url: str, db: Engine) -> None:
    """Several writers (CLI, admin API, replicas) change keys while a gateway syncs its cache."""
    keys = [KeyStore(db).create(f"k{i}") for i in range(18)]
    auth = Authenticator(KeyStore(db), admin_secret=None)
    auth.load()

    engines = [open_database(db_url) for _ in range(3)]  # one per writer, like separate processes
    errors: list[Exception] = []

    def revoke_some(engine: Engine, chunk: list[Any]) -> None:
        try:
            for created in chunk:
                KeyStore(engine).revoke(created.principal.key_id)
                KeyStore(engine).create("noise")
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=revoke_some, args=(e, keys[i::3])) for i, e in enumerate(engines)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        auth.sync()
        time.sleep(0.001)  # let the writers have the GIL
    for t, e in zip(threads, engines, strict=True):
        t.join(1)
        e.dispose()
    assert not any(t.is_alive() for t in threads) and errors == []
    auth.sync()
    still_accepted = []
    for created in keys:
        try:
            await auth.authenticate(f"Bearer {created.secret}")
            still_accepted.append(created.principal.name)
        except AuthenticationFailed:
            pass
    assert still_accepted == []


# --- ledger writer --------------------------------------------------------------------------------------------


async def test_close_drains_every_row(db: Engine, tmp_path: Path) -> None:
    w = writer(db, tmp_path)
    w.start()
    for i in range(500):
        w.record(ledger_row(request_id=f"req_{i}"))
    await w.close()
    assert ledger_count(db) == 500
    assert w.pending == 0
    assert not (tmp_path / "ledger-spill.jsonl").exists()


async def test_background_flush_writes_without_close(db: Engine, tmp_path: Path) -> None:
    w = writer(db, tmp_path, flush_interval=0.05)
    w.start()
    w.record(ledger_row())
    try:
        for _ in range(100):
            if ledger_count(db) == 1:
                break
            await asyncio.sleep(0.05)
        assert ledger_count(db) == 1
    finally:
        await w.close()


async def test_failed_write_is_retried(db: Engine, tmp_path: Path) -> None:
    w = writer(db, tmp_path)
    LedgerRow.__table__.drop(db)  # type: ignore[attr-defined]
    for _ in range(3):
        w.record(ledger_row())
    assert not await w.flush()
    assert w.pending == 3
    LedgerRow.__table__.create(db)  # type: ignore[attr-defined]
    await w.close()
    assert ledger_count(db) == 3


async def test_unwritable_database_spills_rows_on_close(db: Engine, tmp_path: Path) -> None:
    w = writer(db, tmp_path)
    w.start()
    LedgerRow.__table__.drop(db)  # type: ignore[attr-defined]
    ids = [f"req_spill_{i}" for i in range(20)]
    for rid in ids:
        w.record(ledger_row(request_id=rid, tags={"feature": "x"}))
    await w.close(attempts=2)
    spilled = [json.loads(line) for line in (tmp_path / "ledger-spill.jsonl").read_text().splitlines()]
    assert [r["request_id"] for r in spilled] == ids
    assert spilled[0]["tags"] == {"feature": "x"} and spilled[0]["prompt_tokens"] == 10
    assert w.pending == 0

    LedgerRow.__table__.create(db)  # type: ignore[attr-defined]
    restarted = writer(db, tmp_path)
    restarted.start()  # the next run writes the spilled rows back, then forgets the file
    await restarted.close()
    assert ledger_count(db) == 20
    assert not list(tmp_path.glob("ledger-spill*")) and not list(tmp_path.glob("*.recovered"))


# --- usage reports --------------------------------------------------------------------------------------------


@pytest.fixture
def usage_db(db: Engine) -> Engine:
    old = datetime.now(UTC) - timedelta(days=2)
    rows = [
        ledger_row(team="search", key_id="k1", route="chat", tags={"feature": "qa"}, prompt_tokens=10,
                   completion_tokens=1, cost_usd=0.5),
        ledger_row(team="search", key_id="k2", route="chat", tags={"feature": "qa", "tier": "pro"}, prompt_tokens=20,
                   completion_tokens=2, cost_usd=0.25, status=502),
        ledger_row(team="ads", key_id="k3", route="embed", tags={}, prompt_tokens=5, completion_tokens=0,
                   cost_usd=0.125),
        ledger_row(team="ads", key_id="k3", route="chat", tags={"feature": "old"}, prompt_tokens=100,
                   completion_tokens=100, cost_usd=4.0, started_at=old, finished_at=old),
    ]
    with db.begin() as conn:
        conn.execute(insert(LedgerRow), rows)
    return db


def by_group(report: dict[str, Any]) -> dict[Any, tuple[int, int, int, int, float]]:
    return {g["group"]: (g["requests"], g["errors"], g["prompt_tokens"], g["completion_tokens"],
                         pytest.approx(g["cost_usd"])) for g in report["groups"]}


def test_usage_by_team(usage_db: Engine) -> None:
    report = usage_report(usage_db, by="team", since="7d")
    assert by_group(report) == {"search": (2, 1, 30, 3, 0.75), "ads": (2, 0, 105, 100, 4.125)}
    assert [g["group"] for g in report["groups"]] == ["ads", "search"]  # most expensive first
    assert report["totals"]["requests"] == 4 and report["totals"]["cost_usd"] == pytest.approx(4.875)


def test_usage_by_key_and_route(usage_db: Engine) -> None:
    assert by_group(usage_report(usage_db, by="key", since="7d")) == {
        "k1": (1, 0, 10, 1, 0.5), "k2": (1, 1, 20, 2, 0.25), "k3": (2, 0, 105, 100, 4.125)}
    assert by_group(usage_report(usage_db, by="route", since="7d")) == {
        "chat": (3, 1, 130, 103, 4.75), "embed": (1, 0, 5, 0, 0.125)}


def test_usage_by_tag(usage_db: Engine) -> None:
    assert by_group(usage_report(usage_db, by="tag:feature", since="7d")) == {
        "qa": (2, 1, 30, 3, 0.75), "old": (1, 0, 100, 100, 4.0), None: (1, 0, 5, 0, 0.125)}
    assert by_group(usage_report(usage_db, by="tag:tier", since="7d")) == {
        "pro": (1, 1, 20, 2, 0.25), None: (3, 0, 115, 101, 4.625)}


def test_usage_honours_since(usage_db: Engine) -> None:
    report = usage_report(usage_db, by="team", since="1d")
    assert by_group(report) == {"search": (2, 1, 30, 3, 0.75), "ads": (1, 0, 5, 0, 0.125)}
    assert "old" not in by_group(usage_report(usage_db, by="tag:feature", since="24h"))
    assert by_group(usage_report(usage_db, by="team", since="90m"))["ads"][0] == 1


def test_usage_on_empty_ledger_is_zero(db: Engine) -> None:
    report = usage_report(db, by="team", since="7d")
    assert report["groups"] == []
    assert report["totals"] == {"requests": 0, "errors": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                "cost_usd": 0}


@pytest.mark.parametrize(("by", "since", "param"), [
    ("team", "7x", "since"), ("team", "", "since"), ("team", "-1d", "since"),
    ("team", "1000000d", "since"), ("team", "99999999999w", "since"),
    ("nope", "7d", "by"), ("tag:", "7d", "by"),
])
def test_usage_rejects_bad_arguments(db: Engine, by: str, since: str, param: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        usage_report(db, by=by, since=since)
    assert exc.value.param == param



def test_ledger_batches_use_a_bounded_set_of_statement_sizes() -> None:
    """Drivers cache one prepared statement per distinct SQL text; any batch size maps to few texts."""
    from strata.observe.ledger_sql import MAX_ROWS_PER_STATEMENT, chunk_sizes

    seen: set[int] = set()
    for n in range(0, 3000):
        sizes = chunk_sizes(n)
        assert sum(sizes) == n and all(s <= MAX_ROWS_PER_STATEMENT for s in sizes)
        seen.update(sizes)
    assert len(seen) <= 9
