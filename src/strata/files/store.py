"""``FileStore``: upload, list, retrieve, read and delete files, always within one team.

Content goes to the file storage (a directory under the data dir by default, or any fsspec URL), metadata
to the ``files`` table. Another team's file id is "not found", exactly like an id that never existed. The
methods block (database, storage): the HTTP layer runs them in a thread. The Batch API reuses this store.
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from strata.errors import InvalidRequest, NotFound, PayloadTooLarge
from strata.files.config import FilesSettings
from strata.files.tables import StoredFile

log = logging.getLogger(__name__)

PURPOSES = ("assistants", "assistants_output", "batch", "batch_output", "fine-tune", "fine-tune-results", "vision",
            "user_data", "evals")


def new_file_id() -> str:
    return "file-" + os.urandom(12).hex()


def file_object(row: StoredFile) -> dict[str, Any]:
    """OpenAI's ``file`` object."""
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": int(row.created_at.timestamp()),
            "filename": row.filename, "purpose": row.purpose, "status": "processed", "expires_at": None,
            "status_details": None}


class FileStore:
    def __init__(self, db: Engine, cfg: FilesSettings, data_dir: Path) -> None:
        import fsspec  # only when the gateway is built

        self.db = db
        self.max_bytes = cfg.max_bytes
        url = cfg.storage_url or str((data_dir / "files").resolve())
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, file_id: str) -> str:
        return f"{self.root.rstrip('/')}/{file_id}"

    def create(self, team: str, key_id: str | None, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        if purpose not in PURPOSES:
            raise InvalidRequest(f"purpose must be one of {', '.join(PURPOSES)}; not {purpose!r}", param="purpose")
        if len(content) > self.max_bytes:
            raise PayloadTooLarge(f"The file is {len(content)} bytes; the limit is {self.max_bytes} bytes.",
                                  param="file")
        name = os.path.basename(filename.replace("\\", "/"))[:500] or "upload"
        row = StoredFile(id=new_file_id(), team=team, key_id=key_id, filename=name, purpose=purpose,
                         bytes=len(content), sha256=hashlib.sha256(content).hexdigest(), created_at=datetime.now(UTC))
        self.fs.pipe_file(self._path(row.id), content)
        with Session(self.db) as s, s.begin():
            s.add(row)
            s.flush()
            out = file_object(row)
        log.info("file %s uploaded (%d bytes, team %s)", out["id"], out["bytes"], team)
        return out

    def _row(self, s: Session, team: str, file_id: str) -> StoredFile:
        row = s.scalar(select(StoredFile).where(StoredFile.id == file_id, StoredFile.team == team))
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id", code="file_not_found")
        return row

    def get(self, team: str, file_id: str) -> dict[str, Any]:
        with Session(self.db) as s:
            return file_object(self._row(s, team, file_id))

    def info(self, team: str, file_id: str) -> tuple[dict[str, Any], str]:
        """The file object and the sha256 of its content."""
        with Session(self.db) as s:
            row = self._row(s, team, file_id)
            return file_object(row), row.sha256

    def read(self, team: str, file_id: str) -> tuple[dict[str, Any], bytes]:
        obj = self.get(team, file_id)
        return obj, self.fs.cat_file(self._path(file_id))

    def list(self, team: str, *, purpose: str | None = None, limit: int = 10000, after: str | None = None,
             order: str = "desc") -> tuple[list[dict[str, Any]], bool]:
        """A page of the team's files (newest first by default) after the file ``after``; and whether more
        follow."""
        q = select(StoredFile).where(StoredFile.team == team)
        if purpose:
            q = q.where(StoredFile.purpose == purpose)
        with Session(self.db) as s:
            if after:
                cursor = self._row(s, team, after).seq
                q = q.where(StoredFile.seq < cursor if order == "desc" else StoredFile.seq > cursor)
            q = q.order_by(StoredFile.seq.desc() if order == "desc" else StoredFile.seq.asc()).limit(limit + 1)
            rows = list(s.scalars(q))
            return [file_object(r) for r in rows[:limit]], len(rows) > limit

    def delete(self, team: str, file_id: str) -> None:
        with Session(self.db) as s, s.begin():
            self._row(s, team, file_id)
            s.execute(delete(StoredFile).where(StoredFile.id == file_id))
        try:
            self.fs.rm_file(self._path(file_id))
        except FileNotFoundError:
            log.warning("file %s: its content was already gone", file_id)
