"""The ledger journal: every ledger row reaches local disk before its response's last byte.

The ledger writer batches rows in memory for a fraction of a second; a process killed in that window
would lose rows of requests whose clients already had their answer. So each row is first appended to a
journal file, one ``write()`` of one JSON line (in the page cache: it survives a crash of the process;
an ``fsync`` every ``fsync_interval`` bounds what a crash of the machine can take). The next start replays
what the database does not have yet.

Exactly once: the table ``ledger_journal`` holds, per segment, the byte offset up to which its rows are
in ``ledger``, and it is updated in the same transaction as the rows. Rows enter the journal and the
writer's buffer in the same order, so the database always holds a prefix of each segment; replay inserts
from that offset on, nothing twice.

Files, in ``<data_dir>/journal/``:

- ``<owner>.lock``: held (``flock``) by the live process that owns the segments named after it;
- ``<owner>.<n>.jsonl``: its segments, append-only; a new one every ``segment_bytes``, deleted once all
  its rows are in the database;
- ``replay.lock``: held while a starting process opens its journal and replays the segments no live
  process owns (a replica that crashed), so two replicas sharing a data dir never replay one twice; a
  running process also looks for such segments every ``adopt_interval``.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import mmap
import os
import re
import secrets
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, insert, select, update

from strata.observe.ledger_sql import insert_rows
from strata.store.tables import JournalMark

log = logging.getLogger(__name__)
MARK = "_journal"  # a row's (segment, end offset) while it waits in the writer's buffer
REPLAY_BATCH = 2000
SEGMENT = re.compile(r"^(?P<owner>[A-Za-z0-9_-]+)\.(?P<n>\d+)\.jsonl$")


def _owner_name() -> str:
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path`` (created if missing), or None if someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Journal:
    """One process's journal: ``open()``, then ``append()`` per row; ``committed()`` after each DB write."""

    def __init__(self, directory: Path, *, fsync_interval: float = 1.0, segment_bytes: int = 4 << 20,
                 adopt_interval: float = 30.0, owner: str | None = None, mapped: bool = True) -> None:
        self.directory = directory
        self.fsync_interval = fsync_interval
        self.adopt_interval = adopt_interval
        self.segment_bytes = segment_bytes
        self.owner = owner or _owner_name()
        self._lock_fd: int | None = None
        self._fd = -1
        self._mm: mmap.mmap | None = None
        self._mapped = mapped  # segments are preallocated and mapped; False: plain write() (or no fallocate here)
        self._n = 0
        self._name = ""
        self._size = 0
        self._capacity = 0
        self._sizes: dict[str, int] = {}  # segments this process wrote and has not deleted: final/current size
        self._committed: dict[str, int] = {}
        self._unsynced: list[tuple[int, mmap.mmap | None]] = []  # rotated segments, for sync() to close
        self._dirty = False
        self._new_segment = False
        self.forget: list[str] = []  # deleted segments whose marks the next DB write removes
        self.errors = 0

    # --- writing ---------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Take this process's owner lock and start its first segment (call while holding the replay lock)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _try_lock(self.directory / f"{self.owner}.lock")
        if self._lock_fd is None:
            raise RuntimeError(f"journal owner {self.owner} is locked by another process")
        self._reopen(0)  # a full disk: rows still go to the database, and each new row tries again

    def _rotate(self, need: int = 0) -> None:
        self._retire()
        self._n += 1
        name = f"{self.owner}.{self._n:06d}.jsonl"
        capacity = max(self.segment_bytes, need)
        fd = os.open(self.directory / name, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        mm = None
        if self._mapped:
            try:
                os.posix_fallocate(fd, 0, capacity)  # real blocks: a full disk never faults the mapping later
                mm = mmap.mmap(fd, capacity)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    os.close(fd)
                    (self.directory / name).unlink(missing_ok=True)
                    raise
                log.warning("ledger journal: %s cannot be preallocated (%s); appending with write()", name, exc)
                self._mapped = False
        self._fd, self._mm, self._name, self._size, self._capacity = fd, mm, name, 0, capacity
        self._sizes[name] = 0
        self._new_segment = True

    def _retire(self) -> None:
        if self._fd >= 0:
            self._unsynced.append((self._fd, self._mm))
            self._fd, self._mm = -1, None

    def append(self, row: dict[str, Any]) -> tuple[str, int] | None:
        """Add one row as one line; its (segment, end offset), or None if the disk refused it.

        A copy into the segment's shared mapping: the page cache has it at once (so it survives the process),
        with no system call, so the event loop never lets go of the GIL here (``os.write`` does, and then
        waits for the ledger writer's thread to hand it back: measured, up to milliseconds per request)."""
        line = orjson.dumps(row, default=str, option=orjson.OPT_APPEND_NEWLINE)
        n = len(line)
        if (self._fd < 0 or self._size + n > self._capacity) and not self._reopen(n):
            return None
        if self._mm is not None:
            self._mm[self._size:self._size + n] = line
        else:
            try:
                written = os.write(self._fd, line)
            except OSError as exc:
                self._failed(exc, 0)
                return None
            if written != n:
                self._failed(OSError(f"short write: {written} of {n} bytes"), written)
                return None
        self._size += n
        self._sizes[self._name] = self._size
        self._dirty = True
        return self._name, self._size

    def _reopen(self, need: int) -> bool:
        try:
            self._rotate(need)
            return True
        except OSError as exc:
            self._failed(exc, 0)
            return False

    def _failed(self, exc: OSError, written: int) -> None:
        """A refused or torn write: that segment takes no more lines (a torn last line is skipped on
        replay); the next row tries a fresh segment. The row itself still goes to the database."""
        self.errors += 1
        if self.errors == 1 or self.errors % 1000 == 0:
            log.error("ledger journal write failed (%d so far; rows still go to the database): %s", self.errors, exc)
        if self._fd >= 0:
            self._size += written
            self._sizes[self._name] = self._size
        self._retire()

    def sync(self) -> None:
        """fsync what was added since the last call (run in a worker thread every ``fsync_interval``)."""
        while self._unsynced:
            fd, mm = self._unsynced.pop()
            os.fsync(fd)
            if mm is not None:
                mm.close()
            os.close(fd)
        fd = self._fd
        if self._dirty and fd >= 0:
            self._dirty = False
            os.fsync(fd)  # writes back the mapping's dirty pages too
        if self._new_segment:
            self._new_segment = False
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def committed(self, marks: dict[str, int]) -> None:
        """These segments are in the database up to these offsets: delete the rotated ones that are whole."""
        self._committed.update(marks)
        for name, size in list(self._sizes.items()):
            if name != self._name and self._committed.get(name, 0) >= size:
                self._delete(name)

    def _delete(self, name: str) -> None:
        (self.directory / name).unlink(missing_ok=True)  # the file first: a mark without a file is harmless
        self._sizes.pop(name, None)
        self._committed.pop(name, None)
        self.forget.append(name)

    def close(self, drained: bool) -> None:
        """Stop writing. ``drained``: every row is in the database, so the segments and the lock go; else they
        stay for the next start to replay."""
        self._retire()
        self.sync()
        if drained:
            for name in list(self._sizes):
                if self._committed.get(name, 0) >= self._sizes[name]:
                    self._delete(name)
        if self._lock_fd is not None:
            if not self._sizes:
                (self.directory / f"{self.owner}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    # --- replay ----------------------------------------------------------------------------------------------

    def open_and_replay(self, engine: Engine) -> int:
        """Under the replay lock: open this journal, then replay every segment no live process owns."""
        self.directory.mkdir(parents=True, exist_ok=True)
        replay_fd = os.open(self.directory / "replay.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(replay_fd, fcntl.LOCK_EX)  # another replica starting: wait for its replay
            self.open()
            return self._replay_orphans(engine)
        finally:
            os.close(replay_fd)

    def adopt(self, engine: Engine) -> int:
        """While running: replay the journals of processes that died since (a replica sharing the data dir
        that crashed and was not restarted); skipped while another process is replaying. Any thread."""
        replay_fd = os.open(self.directory / "replay.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(replay_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0
            return self._replay_orphans(engine)
        finally:
            os.close(replay_fd)

    def _replay_orphans(self, engine: Engine) -> int:
        return sum(self._replay_owner(engine, owner, paths) for owner, paths in self._orphans().items())

    def _orphans(self) -> dict[str, list[Path]]:
        by_owner: dict[str, list[Path]] = {}
        for path in sorted(self.directory.glob("*.jsonl")):
            m = SEGMENT.match(path.name)
            if m and m["owner"] != self.owner:
                by_owner.setdefault(m["owner"], []).append(path)
        for lock in self.directory.glob("*.lock"):
            if lock.stem not in ("replay", self.owner):
                by_owner.setdefault(lock.stem, [])
        return by_owner

    def _replay_owner(self, engine: Engine, owner: str, paths: list[Path]) -> int:
        lock = self.directory / f"{owner}.lock"
        fd = _try_lock(lock)
        if fd is None:
            return 0  # its owner is alive
        try:
            rows = 0
            for path in paths:
                rows += replay_segment(engine, path)
                path.unlink()
                with engine.begin() as conn:
                    conn.execute(delete(JournalMark).where(JournalMark.segment == path.name))
            lock.unlink(missing_ok=True)
            return rows
        finally:
            os.close(fd)


def replay_segment(engine: Engine, path: Path) -> int:
    """Insert the rows of one segment the database does not have yet; returns how many."""
    with engine.connect() as conn:
        done = conn.scalar(select(JournalMark.committed).where(JournalMark.segment == path.name)) or 0
    data = path.read_bytes()
    pos, batch, total = done, [], 0
    while pos < len(data):
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # a torn last line (the machine crashed mid-write): never acknowledged as durable
        line, pos = data[pos:nl], nl + 1
        row = _decode(line, path)
        if row is not None:
            batch.append(row)
        if len(batch) >= REPLAY_BATCH:
            _commit(engine, batch, path.name, pos)
            total, batch = total + len(batch), []
    if batch or pos > done:
        _commit(engine, batch, path.name, pos)
    total += len(batch)
    if total:
        log.warning("ledger journal: replayed %d rows of %s into the database", total, path.name)
    return total


def _decode(line: bytes, path: Path) -> dict[str, Any] | None:
    line = line.lstrip(b"\0")  # after a machine crash: a page never written back reads as zeros
    if not line.strip():
        return None
    try:
        row: dict[str, Any] = orjson.loads(line)
        for field in ("started_at", "finished_at"):
            row[field] = datetime.fromisoformat(row[field])
        return row
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        log.error("ledger journal %s: skipping an unreadable line (%s): %.200r", path.name, exc, line)
        return None


def _commit(engine: Engine, rows: list[dict[str, Any]], segment: str, offset: int) -> None:
    with engine.begin() as conn:
        if rows:
            insert_rows(conn, rows)
        save_marks(conn, {segment: offset}, [])


def save_marks(conn: Connection, marks: dict[str, int], forget: list[str]) -> None:
    """Record how far segments are in the ledger (same transaction as their rows); drop deleted ones."""
    now = datetime.now(UTC)
    for segment, offset in marks.items():
        done = conn.execute(update(JournalMark).where(JournalMark.segment == segment)
                            .values(committed=offset, updated_at=now))
        if done.rowcount == 0:
            conn.execute(insert(JournalMark).values(segment=segment, committed=offset, updated_at=now))
    if forget:
        conn.execute(delete(JournalMark).where(JournalMark.segment.in_(forget)))


def marks_of(rows: list[dict[str, Any]]) -> dict[str, int]:
    """The highest journal offset per segment among these rows."""
    marks: dict[str, int] = {}
    for row in rows:
        mark = row.get(MARK)
        if mark is not None:
            marks[mark[0]] = max(marks.get(mark[0], 0), mark[1])
    return marks
