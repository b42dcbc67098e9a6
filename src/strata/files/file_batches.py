"""Vector store file batches: many files added at once; the batch's counts and status come from its files."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from strata.errors import InvalidRequest, NotFound
from strata.files.tables import FileBatchRow, VectorStoreFileRow
from strata.files.vector_stores import VectorStores, _counts


def _view(s: Session, row: FileBatchRow) -> dict[str, Any]:
    counts = _counts(s, VectorStoreFileRow.batch_id == row.id)
    status = row.status
    if status == "in_progress" and not counts["in_progress"]:
        status = "failed" if counts["failed"] and not counts["completed"] else "completed"
    return {"id": row.id, "object": "vector_store.files_batch", "created_at": int(row.created_at.timestamp()),
            "vector_store_id": row.vector_store_id, "status": status, "file_counts": counts}


class FileBatches:
    def __init__(self, stores: VectorStores) -> None:
        self.stores = stores

    async def create(self, team: str, key_id: str | None, vs_id: str, body: dict[str, Any]) -> dict[str, Any]:
        items = _items(body)
        await asyncio.to_thread(self.stores.collection_of, team, vs_id)
        for item in items:  # every file must exist before any is added
            await asyncio.to_thread(self.stores.files.get, team, item["file_id"])
        row = FileBatchRow(id="vsfb_" + os.urandom(12).hex(), vector_store_id=vs_id, team=team, status="in_progress",
                           created_at=datetime.now(UTC))
        await asyncio.to_thread(self.stores._insert, row)
        for item in items:
            await self.stores.add_file(team, key_id, vs_id, item, batch_id=row.id)
        return await asyncio.to_thread(self.get, team, vs_id, row.id)

    def _row(self, s: Session, team: str, vs_id: str, batch_id: str) -> FileBatchRow:
        row = s.scalar(select(FileBatchRow).where(FileBatchRow.id == batch_id, FileBatchRow.team == team,
                                                  FileBatchRow.vector_store_id == vs_id))
        if row is None:
            raise NotFound(f"No file batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found")
        return row

    def get(self, team: str, vs_id: str, batch_id: str) -> dict[str, Any]:
        with Session(self.db) as s:
            return _view(s, self._row(s, team, vs_id, batch_id))

    @property
    def db(self) -> Any:
        return self.stores.db

    async def cancel(self, team: str, vs_id: str, batch_id: str) -> dict[str, Any]:
        """Files not yet ingested are cancelled; those done stay."""
        await asyncio.to_thread(self.get, team, vs_id, batch_id)
        for (store, file_id), task in list(self.stores.running.items()):
            if store == vs_id and await asyncio.to_thread(self._in_batch, batch_id, file_id):
                task.cancel()
        await asyncio.to_thread(self._cancel_rows, batch_id)
        return await asyncio.to_thread(self.get, team, vs_id, batch_id)

    def _in_batch(self, batch_id: str, file_id: str) -> bool:
        with Session(self.db) as s:
            return s.scalar(select(VectorStoreFileRow.seq).where(VectorStoreFileRow.batch_id == batch_id,
                                                                 VectorStoreFileRow.file_id == file_id)) is not None

    def _cancel_rows(self, batch_id: str) -> None:
        with Session(self.db) as s, s.begin():
            s.execute(update(VectorStoreFileRow).where(VectorStoreFileRow.batch_id == batch_id,
                                                       VectorStoreFileRow.status == "in_progress")
                      .values(status="cancelled"))
            s.execute(update(FileBatchRow).where(FileBatchRow.id == batch_id).values(status="cancelled"))


def _items(body: dict[str, Any]) -> list[dict[str, Any]]:
    """``file_ids`` (with the batch's ``attributes``/``chunking_strategy``) or ``files`` (each its own)."""
    if body.get("files") is not None:
        files = body["files"]
        if not isinstance(files, list) or not files or not all(isinstance(f, dict) for f in files):
            raise InvalidRequest("files is a non-empty list of {file_id, attributes?, chunking_strategy?}",
                                 param="files")
        return [dict(f) for f in files]
    ids = body.get("file_ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise InvalidRequest("file_ids is a non-empty list of file ids", param="file_ids",
                             code="missing_required_parameter")
    return [{"file_id": i, "attributes": body.get("attributes"), "chunking_strategy": body.get("chunking_strategy")}
            for i in ids]
