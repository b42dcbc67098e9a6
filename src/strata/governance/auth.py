"""Authenticating requests against an in-memory view of the key table.

The hot path never touches the database for a known key: the table is loaded at startup and kept in
sync by a short polling loop (revocations made by the CLI land within ``keys.sync_interval``); changes
made through the admin API apply immediately. An unknown key falls back to one database lookup so a
key created by the CLI a moment ago works at once.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from datetime import UTC, datetime

from strata.errors import AuthenticationFailed
from strata.governance.keys import KeyStore, Principal, hash_key

log = logging.getLogger(__name__)

ENV_ADMIN = Principal(key_id="admin-env", name="STRATA_ADMIN_KEY", team="admin", allowed_routes=None, is_admin=True)


class Authenticator:
    def __init__(self, store: KeyStore, admin_secret: str | None) -> None:
        self.store = store
        self._admin_secret = admin_secret
        self._by_hash: dict[str, Principal] = {}
        self._seq = 0

    def load(self) -> None:
        self._seq, self._by_hash = self.store.changes_since(0)

    def apply(self, key_hash: str, principal: Principal) -> None:
        self._by_hash[key_hash] = principal

    async def authenticate(self, authorization: str | None) -> Principal:
        secret = _bearer(authorization)
        if self._admin_secret is not None and hmac.compare_digest(secret, self._admin_secret):
            return ENV_ADMIN
        key_hash = hash_key(secret)
        principal = self._by_hash.get(key_hash)
        if principal is None:
            principal = await asyncio.to_thread(self.store.find, key_hash)
            if principal is None:
                raise AuthenticationFailed("Incorrect API key provided.")
            self._by_hash[key_hash] = principal
        if principal.revoked:
            raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
        if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
            raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
        return principal

    def sync(self) -> None:
        seq, changed = self.store.changes_since(self._seq)
        if changed:
            self._by_hash.update(changed)
            log.debug("key cache: %d keys changed", len(changed))
        self._seq = seq

    async def sync_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.sync)
            except Exception:  # a DB hiccup must not stop the loop; the next tick retries
                log.exception("key sync failed")


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.", code="missing_api_key"
        )
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed("Malformed Authorization header; expected 'Bearer YOUR_KEY'.")
    return secret.strip()
