"""The usage ledger writer: one row per request, written in batches off the hot path.

``record()`` only appends to a buffer. A background task writes the buffer every ``flush_interval`` (or
sooner once ``batch_size`` rows wait) in a worker thread. A failed write keeps its rows and retries; on
shutdown ``close()`` drains everything, and if the database is still unwritable the rows are spilled to
``ledger-spill.jsonl`` in the data dir rather than dropped.
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

from strata.observe.ledger_sql import insert_rows
from strata.observe.metrics import Metrics

log = logging.getLogger(__name__)


class LedgerWriter:
    def __init__(self, engine: Engine, metrics: Metrics, *, flush_interval: float, batch_size: int,
                 spill_path: Path) -> None:
        self.engine = engine
        self.metrics = metrics
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.spill_path = spill_path
        self._buffer: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._recovered: Path | None = None

    def start(self) -> None:
        self._recover_spill()
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    def record(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    def find_pending(self, request_id: str) -> dict[str, Any] | None:
        """The served row of a request recorded but not written yet (not its shadow's)."""
        return next((r for r in reversed(self._buffer) if r["request_id"] == request_id and r.get("role") != "shadow"),
                    None)

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def _run(self) -> None:
        while not self._closing:
            try:
                await asyncio.wait_for(self._wake.wait(), self.flush_interval)
            except TimeoutError:
                pass
            self._wake.clear()
            await self.flush()

    async def flush(self) -> bool:
        """Write everything buffered now; on failure the rows go back to the front of the buffer."""
        if not self._buffer:
            return True
        batch, self._buffer = self._buffer, []
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._write, batch)
        except Exception as exc:  # any DB error: keep the rows, retry on the next tick
            self._buffer[:0] = batch
            self.metrics.ledger_errors.inc()
            log.warning("ledger write of %d rows failed (will retry): %s", len(batch), exc)
            return False
        finally:
            self.metrics.ledger_pending.set(len(self._buffer))
        self.metrics.ledger_written.inc(len(batch))
        log.debug("ledger: wrote %d rows in %.1f ms", len(batch), (time.perf_counter() - started) * 1000)
        if self._recovered is not None:  # spilled rows are in the database now
            self._recovered.unlink(missing_ok=True)
            self._recovered = None
        return True

    def _write(self, batch: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            insert_rows(conn, batch)

    async def close(self, attempts: int = 5) -> None:
        """Stop the loop and drain the buffer; spill to disk what the database would not take."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                await self._task
            except BaseException:  # the loop was cancelled or died: the buffer is still ours to drain
                log.warning("ledger loop ended abnormally; draining %d rows", len(self._buffer))
        for i in range(attempts):
            if await self.flush():
                return
            await asyncio.sleep(0.2 * (i + 1))
        self._spill()

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
                f.write(orjson.dumps(row, default=str) + b"\n")
        log.error("database unwritable: spilled %d ledger rows to %s", len(self._buffer), self.spill_path)
        self._buffer = []
