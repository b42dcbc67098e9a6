"""The usage ledger writer: one row per request, written in batches off the hot path.

``record()`` appends the row to the journal (``observe.journal``: one line on local disk, so a crash loses
nothing a client saw answered) and to a buffer. A background task writes the buffer every
``flush_interval`` (or sooner once ``batch_size`` rows wait) in a worker thread, with how far each journal
segment now is in the database, in the same transaction. A failed write keeps its rows and retries; on
shutdown ``close()`` drains everything. If the database is still unwritable, the rows stay in the journal
for the next start to replay (without a journal: they are spilled to ``ledger-spill.jsonl``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine

from strata.observe.journal import MARK, Journal, marks_of, save_marks
from strata.observe.ledger_sql import insert_rows
from strata.observe.metrics import Metrics

log = logging.getLogger(__name__)


class LedgerWriter:
    def __init__(self, engine: Engine, metrics: Metrics, *, flush_interval: float, batch_size: int,
                 spill_path: Path, journal: Journal | None = None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.spill_path = spill_path
        self._buffer: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._wake_sync = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._recovered: Path | None = None
        self.journal = journal
        self._sync_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Replay what crashed processes journaled but never wrote, then start the batch loop."""
        self._recover_spill()
        if self.journal is not None:
            started = time.perf_counter()
            replayed = self.journal.open_and_replay(self.engine)
            if replayed:
                self.metrics.ledger_written.inc(replayed)
                log.warning("ledger journal: %d rows replayed in %.0f ms", replayed,
                            (time.perf_counter() - started) * 1000)
            self._sync_task = asyncio.create_task(self._sync(self.journal), name="ledger-journal-sync")
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    def record(self, row: dict[str, Any]) -> None:
        """Journal the row (before the response's last byte goes out), then buffer it for the database."""
        if self.journal is not None and (mark := self.journal.append(row)) is not None:
            row[MARK] = mark
        self._buffer.append(row)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def find_pending(self, request_id: str) -> dict[str, Any] | None:
        """The served row of a request recorded but not written yet (not its shadow's nor its quality judge's)."""
        return next((r for r in reversed(self._buffer) if r["request_id"] == request_id
                     and r.get("role") not in ("shadow", "judge")), None)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def _sync(self, journal: Journal) -> None:
        """fsync the journal every ``fsync_interval`` (process crashes need none: the page cache survives)."""
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake_sync.wait(), journal.fsync_interval)
            except TimeoutError:
                pass
            try:
                await asyncio.to_thread(journal.sync)
            except OSError as exc:
                log.warning("ledger journal fsync failed: %s", exc)

    async def _run(self) -> None:
        adopted = time.monotonic()
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()
            if self.journal is not None and time.monotonic() - adopted >= self.journal.adopt_interval:
                adopted = time.monotonic()
                await self._adopt(self.journal)

    async def _adopt(self, journal: Journal) -> None:
        """Replay the journals of replicas (sharing this data dir) that died and were not restarted."""
        try:
            replayed = await asyncio.to_thread(journal.adopt, self.engine)
        except Exception as exc:  # a DB error: they stay for the next look
            log.warning("ledger journal: could not replay the journals of dead processes: %s", exc)
            return
        if replayed:
            self.metrics.ledger_written.inc(replayed)
            log.warning("ledger journal: %d rows replayed from dead processes' journals", replayed)

    async def flush(self) -> bool:
        """Write everything buffered now; on failure the rows go back to the front of the buffer."""
        if not self._buffer:
            return True
        batch, self._buffer = self._buffer, []
        marks = marks_of(batch) if self.journal is not None else {}
        forget = self.journal.forget[:] if self.journal is not None else []
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._write, batch, marks, forget)
        except Exception as exc:  # any DB error: keep the rows, retry on the next tick
            self._buffer[:0] = batch
            self.metrics.ledger_errors.inc()
            log.warning("ledger write of %d rows failed (will retry): %s", len(batch), exc)
            return False
        finally:
            self.metrics.ledger_pending.set(len(self._buffer))
        self.metrics.ledger_written.inc(len(batch))
        if self.journal is not None:
            del self.journal.forget[:len(forget)]
            self.journal.committed(marks)
        log.debug("ledger: wrote %d rows in %.1f ms", len(batch), (time.perf_counter() - started) * 1000)
        if self._recovered is not None:  # spilled rows are in the database now
            self._recovered.unlink(missing_ok=True)
            self._recovered = None
        return True

    def _write(self, batch: list[dict[str, Any]], marks: dict[str, int], forget: list[str]) -> None:
        with self.engine.begin() as conn:
            insert_rows(conn, batch)
            if marks or forget:
                save_marks(conn, marks, forget)

    async def close(self, attempts: int = 5) -> None:
        """Stop the loop and drain the buffer; what the database would not take stays in the journal (without
        one: is spilled to disk)."""
        self._closing = True
        self._wake.set()
        self._wake_sync.set()
        if self._sync_task is not None:
            await asyncio.gather(self._sync_task, return_exceptions=True)
        if self._task is not None:
            try:
                await self._task
            except BaseException:  # the loop was cancelled or died: the buffer is still ours to drain
                log.warning("ledger loop ended abnormally; draining %d rows", len(self._buffer))
        for i in range(attempts):
            if await self.flush():
                break
            await asyncio.sleep(0.2 * (i + 1))
        else:
            if self.journal is None:
                self._spill()
                return
            log.error("database unwritable: %d ledger rows stay in the journal %s, replayed on the next start",
                      len(self._buffer), self.journal.directory)
        if self.journal is not None:
            self._close_journal(self.journal, drained=not self._buffer)

    def _close_journal(self, journal: Journal, drained: bool) -> None:
        journal.close(drained)
        if journal.forget:  # the deleted segments' marks; a leftover mark is harmless (names are never reused)
            try:
                with self.engine.begin() as conn:
                    save_marks(conn, {}, journal.forget)
                journal.forget.clear()
            except Exception as exc:
                log.warning("ledger journal: could not remove %d segment marks: %s", len(journal.forget), exc)

    def _recover_spill(self) -> None:
        """Rows spilled by an earlier run go back into the buffer, to be written with the first batch."""
        recovered = self.spill_path.with_suffix(".recovered")
        if self.spill_path.exists() and not recovered.exists():
            self.spill_path.rename(recovered)
        if not recovered.exists():
            return
        rows = [orjson.loads(line) for line in recovered.read_bytes().splitlines() if line.strip()]
        for row in rows:
            for field in ("started_at", "finished_at"):
                row[field] = datetime.fromisoformat(row[field])
        self._buffer[:0] = rows
        self._recovered = recovered
        log.warning("recovered %d spilled ledger rows from %s", len(rows), self.spill_path)

    def _spill(self) -> None:
        self.spill_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spill_path, "ab") as f:
            for row in self._buffer:
                row.pop(MARK, None)
                f.write(orjson.dumps(row, default=str) + b"\n")
        log.error("database unwritable: spilled %d ledger rows to %s", len(self._buffer), self.spill_path)
        self._buffer = []
