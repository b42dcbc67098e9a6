"""The ledger journal: a gateway killed under load loses no row of a request its client saw answered."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam
from sqlalchemy import Engine, func, select

from strata.observe.journal import Journal
from strata.observe.ledger import LedgerWriter
from strata.observe.metrics import Metrics
from strata.store.db import make_engine, open_database
from strata.store.tables import LedgerRow
from tests.servers import StrataProcess, openai_route, wait_for
from tests.upstreams import REPLY, FaultyUpstream

HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
KILLED = -signal.SIGKILL


def config(upstream: FaultyUpstream, db_url: str, adopt_interval: float = 600) -> dict[str, Any]:
    # Rows wait up to 2 s in memory before their batch is written: a kill always catches some in the window.
    return {"routes": [openai_route("ok", upstream.base_url, "ok")], "database": {"url": db_url},
            "ledger": {"flush_interval": 2.0, "journal": {"adopt_interval": adopt_interval}}}


async def drive(gw: StrataProcess, prefix: str, answered: set[str], stop: asyncio.Event, workers: int = 8) -> None:
    """Closed-loop load, half of it streamed; the id of every request whose whole answer arrived goes in
    ``answered``. Each worker ends at its first failure (the gateway was killed) or when ``stop`` is set."""
    client = gw.async_client(timeout=10)

    async def worker(w: int) -> None:
        for i in range(1_000_000):
            rid = f"{prefix}-{w}-{i}"
            headers = {"X-Request-Id": rid}
            try:
                if i % 2:
                    stream = await client.chat.completions.create(model="ok", messages=HI, stream=True,
                                                                  extra_headers=headers)
                    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
                else:
                    reply = await client.chat.completions.create(model="ok", messages=HI, extra_headers=headers)
                    text = reply.choices[0].message.content or ""
            except openai.APIError:
                return
            assert text == REPLY
            answered.add(rid)  # the stream ended with data: [DONE]: the client has its whole answer
            if stop.is_set():
                return

    await asyncio.gather(*(worker(w) for w in range(workers)))
    await client.close()


async def load_until(gws: list[tuple[StrataProcess, str]], answered: set[str], at_least: int,
                     kill: StrataProcess) -> None:
    """Load every gateway; once ``at_least`` answers are in, SIGKILL ``kill`` mid-load."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(drive(gw, prefix, answered, stop)) for gw, prefix in gws]
    deadline = time.monotonic() + 60
    while len(answered) < at_least and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert kill.proc is not None
    kill.proc.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(kill.proc.wait, 30) == KILLED
    await asyncio.sleep(0.3)  # the other gateway keeps serving meanwhile
    stop.set()
    await asyncio.gather(*tasks)


async def test_sigkill_under_load_loses_no_answered_request(upstream: FaultyUpstream, tmp_path: Path,
                                                            db_url: str) -> None:
    """Two replicas share a data dir; one is SIGKILLed under load and restarted while the other serves on.
    Every request a client saw answered, on either replica, ends up with exactly one ledger row."""
    a = StrataProcess(tmp_path, config(upstream, db_url)).start(ready_timeout=60)
    b = StrataProcess(tmp_path, config(upstream, db_url)).start(ready_timeout=60)
    db = make_engine(db_url)
    answered: set[str] = set()
    restarted: StrataProcess | None = None
    try:
        await load_until([(a, "a"), (b, "b")], answered, at_least=400, kill=a)
        killed_answers = {r for r in answered if r.startswith("a-")}
        assert killed_answers, "the killed replica answered nothing before the kill"

        restarted = StrataProcess(tmp_path, config(upstream, db_url)).start(ready_timeout=60)  # replays a's rows
        rows = ledger_ids(db)
        missing = killed_answers - rows.keys()
        assert not missing, f"{len(missing)} of {len(killed_answers)} answered requests have no ledger row"
        assert "rows replayed" in restarted.log(), "nothing was replayed: the kill did not test the journal"
        client = restarted.client(timeout=10)
        assert client.chat.completions.create(model="ok", messages=HI).choices[0].message.content == REPLY
    finally:
        b.stop()
        if restarted is not None:
            restarted.stop()

    rows = ledger_ids(db)
    db.dispose()
    assert answered <= rows.keys(), f"answered but missing: {sorted(answered - rows.keys())[:5]}"
    twice = {rid: n for rid, n in rows.items() if n > 1}
    assert not twice, f"requests with more than one ledger row: {list(twice.items())[:5]}"
    assert not list((tmp_path / "journal").glob("*.jsonl")), "journal files left after every row was written"


async def test_a_running_replica_adopts_the_journal_of_one_that_stays_down(upstream: FaultyUpstream,
                                                                           tmp_path: Path) -> None:
    """A replica killed under load and never restarted: the one still running replays its journal."""
    db_url = f"sqlite:///{tmp_path / 'strata.db'}"
    a = StrataProcess(tmp_path, config(upstream, db_url, adopt_interval=1)).start(ready_timeout=60)
    b = StrataProcess(tmp_path, config(upstream, db_url, adopt_interval=1)).start(ready_timeout=60)
    db = make_engine(db_url)
    answered: set[str] = set()
    try:
        await load_until([(a, "a"), (b, "b")], answered, at_least=300, kill=a)
        killed_answers = {r for r in answered if r.startswith("a-")}
        assert killed_answers
        wait_for(lambda: killed_answers <= ledger_ids(db).keys(), 20, "b to replay a's journal")
        # The rows are committed segment by segment; the summary line is logged once the whole journal is in.
        wait_for(lambda: "replayed from dead processes" in b.log(), 20, "b to finish replaying a's journal")
    finally:
        b.stop()
    rows = ledger_ids(db)
    db.dispose()
    assert answered <= rows.keys()
    assert set(rows.values()) == {1}, "a request with more than one ledger row"
    assert not list((tmp_path / "journal").glob("*.jsonl")), "journal files left after every row was written"


# --- replay, against SQLite and PostgreSQL ------------------------------------------------------------------

CRASHING_WRITER = """
import asyncio, os, signal, sys
from datetime import UTC, datetime
from pathlib import Path
from strata.observe.journal import Journal
from strata.observe.ledger import LedgerWriter
from strata.observe.metrics import Metrics
from strata.store.db import open_database

url, journal_dir = sys.argv[1], Path(sys.argv[2])

def row(i):
    now = datetime.now(UTC)
    return {"request_id": f"req-{i}", "started_at": now, "finished_at": now, "endpoint": "chat", "key_id": "k1",
            "team": "t1", "user": None, "tags": {"feature": "x"}, "route": "r1", "deployment": "r1-dep",
            "engine": "openai", "model": "m", "stream": False, "prompt_tokens": 10, "completion_tokens": 5,
            "latency_ms": 12.0, "status": 200, "cost_usd": 0.01, "attempts": [{"deployment": "r1-dep"}]}

async def main():
    journal = Journal(journal_dir, segment_bytes=4096)  # a new segment every ~6 rows
    w = LedgerWriter(open_database(url), Metrics(), flush_interval=600, batch_size=10_000,
                     spill_path=journal_dir.parent / "spill.jsonl", journal=journal)
    w.start()
    for i in range(100):
        w.record(row(i))
    assert await w.flush()  # these 100 are in the database; the next 50 only in the journal
    for i in range(100, 150):
        w.record(row(i))
    newest = max(journal_dir.glob("*.jsonl"))
    data = newest.read_bytes()
    with open(newest, "r+b") as f:  # the machine died mid-line: a line never finished, after the last whole one
        f.seek(data.rfind(b"\\n") + 1)
        f.write(b'{"request_id": "torn')
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def ledger_ids(engine: Engine) -> Counter[str]:
    with engine.connect() as conn:
        return Counter(conn.scalars(select(LedgerRow.request_id)))


async def test_replay_inserts_each_journaled_row_exactly_once(db_url: str, tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    crashed = subprocess.run([sys.executable, "-c", CRASHING_WRITER, db_url, str(journal_dir)],
                             capture_output=True, text=True, timeout=120)
    assert crashed.returncode == KILLED, crashed.stderr
    engine = open_database(db_url)
    try:
        assert sum(ledger_ids(engine).values()) == 100
        for _ in range(2):  # a second start finds nothing left to replay
            w = LedgerWriter(engine, Metrics(), flush_interval=600, batch_size=100,
                             spill_path=tmp_path / "spill.jsonl", journal=Journal(journal_dir))
            w.start()
            await w.close()
            ids = ledger_ids(engine)
            assert sorted(ids) == sorted(f"req-{i}" for i in range(150))
            assert set(ids.values()) == {1}
        with engine.connect() as conn:
            row = conn.execute(select(LedgerRow).where(LedgerRow.request_id == "req-120")).one()
            assert (row.tags, row.attempts, row.prompt_tokens, row.status) == (
                {"feature": "x"}, [{"deployment": "r1-dep"}], 10, 200)
            assert conn.scalar(select(func.count()).select_from(LedgerRow)) == 150
        assert sorted(p.name for p in journal_dir.iterdir()) == ["replay.lock"]
    finally:
        engine.dispose()
