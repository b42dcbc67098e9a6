"""Stored Responses API answers (``store: true``, the default): what ``previous_response_id`` continues and
``GET /v1/responses/{id}`` shows. One row per response in the ``responses`` table, scoped to the key that
created it (another key, even of the same team, sees 404, as OpenAI scopes responses to a project's keys),
kept for ``TTL`` (30 days, OpenAI's retention); expired rows read as missing and are deleted as new ones come.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from strata.governance.keys import Principal
from strata.store.tables import StoredResponse

TTL = timedelta(days=30)


class ResponseStore:
    def __init__(self, db: Engine, ttl: timedelta = TTL, clock: Callable[[], float] = time.time) -> None:
        self.db, self.ttl, self.clock = db, ttl, clock

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    async def get(self, response_id: str, principal: Principal) -> StoredResponse | None:
        """The stored response, if this key made it and it has not expired."""
        return await asyncio.to_thread(self._get, response_id, principal.key_id)

    def _get(self, response_id: str, key_id: str) -> StoredResponse | None:
        with Session(self.db) as s:
            row = s.scalars(select(StoredResponse).where(StoredResponse.id == response_id)).first()
            if row is None or row.key_id != key_id or _aware(row.expires_at) <= self._now():
                return None
            s.expunge(row)
            return row

    async def put(self, response_id: str, principal: Principal, messages: list[dict[str, Any]],
                  response: dict[str, Any]) -> None:
        await asyncio.to_thread(self._put, response_id, principal, messages, response)

    def _put(self, response_id: str, principal: Principal, messages: list[dict[str, Any]],
             response: dict[str, Any]) -> None:
        now = self._now()
        with Session(self.db) as s, s.begin():
            s.execute(delete(StoredResponse).where(StoredResponse.expires_at <= now))
            s.add(StoredResponse(id=response_id, key_id=principal.key_id, team=principal.team, created_at=now,
                                 expires_at=now + self.ttl, messages=messages, response=response))


def _aware(at: datetime) -> datetime:
    """SQLite hands timestamps back naive (they were written in UTC)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
