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
import time
from datetime import UTC, datetime

from starlette.requests import HTTPConnection

from strata.errors import AuthenticationFailed
from strata.governance.abuse import AuthLockout
from strata.governance.keys import KeyStore, Principal, hash_key

log = logging.getLogger(__name__)

UNKNOWN_TTL = 2.0
UNKNOWN_CACHE_SIZE = 10_000
ENV_ADMIN = Principal(key_id="admin-env", name="STRATA_ADMIN_KEY", team="admin", allowed_routes=None, is_admin=True)


class Authenticator:
    def __init__(self, store: KeyStore, admin_secret: str | None) -> None:
        self.store = store
        self._admin_secret = admin_secret
        self._by_hash: dict[str, Principal] = {}
        self._seq = 0
        self._unknown: dict[str, float] = {}  # hash -> until when it is known to be wrong
        self.lockout: AuthLockout | None = None  # per-IP lockout after repeated failures (``governance.abuse``)

    def load(self) -> None:
        self._seq, self._by_hash = self.store.changes_since(0)

    def apply(self, key_hash: str, principal: Principal) -> None:
        self._by_hash[key_hash] = principal
        self._unknown.pop(key_hash, None)

    async def authenticate_request(self, request: HTTPConnection) -> Principal:
        """``authenticate`` the request's key, unless its IP is locked out (429, even for a valid key); a
        failure counts against the IP."""
        authorization = request.headers.get("authorization")
        if self.lockout is None:
            return await self.authenticate(authorization)
        ip = self.lockout.client_ip(request.client.host if request.client else None,
                                    request.headers.get("x-forwarded-for"))
        self.lockout.check(ip)
        try:
            return await self.authenticate(authorization)
        except AuthenticationFailed:
            self.lockout.failed(ip)
            raise

    async def authenticate(self, authorization: str | None) -> Principal:
        secret = _bearer(authorization)
        if self._admin_secret is not None and hmac.compare_digest(secret, self._admin_secret):
            return ENV_ADMIN
        key_hash = hash_key(secret)
        principal = self._by_hash.get(key_hash)
        if principal is None:
            principal = await self._lookup(key_hash)
        if principal.revoked:
            raise AuthenticationFailed("This API key has been revoked.", code="revoked_api_key")
        if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
            raise AuthenticationFailed("This API key has expired.", code="expired_api_key")
        return principal

    async def _lookup(self, key_hash: str) -> Principal:
        """One database read for a key not in memory; a wrong key is remembered briefly, so a client
        hammering with bad keys costs no database traffic."""
        now = time.monotonic()
        if self._unknown.get(key_hash, 0.0) > now:
            raise AuthenticationFailed("Incorrect API key provided.")
        principal = await asyncio.to_thread(self.store.find, key_hash)
        if principal is None:
            if len(self._unknown) >= UNKNOWN_CACHE_SIZE:
                self._unknown.clear()
            self._unknown[key_hash] = now + UNKNOWN_TTL
            raise AuthenticationFailed("Incorrect API key provided.")
        self._by_hash[key_hash] = principal
        return principal

    def sync(self) -> None:
        seq, changed = self.store.changes_since(self._seq)
        if changed:
            self._by_hash.update(changed)
            log.debug("key cache: %d keys changed", len(changed))
        self._seq = seq

    async def refresh(self) -> None:
        """One pass of the key-sync loop (``gateway.monitor.control_loops``, every ``keys.sync_interval``); a
        database hiccup fails this pass only (the loop runner logs it, the next pass retries)."""
        await asyncio.to_thread(self.sync)


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationFailed(
            "You didn't provide an API key. Send it as 'Authorization: Bearer YOUR_KEY'.", code="missing_api_key"
        )
    scheme, _, secret = authorization.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed("Malformed Authorization header; expected 'Bearer YOUR_KEY'.")
    return secret.strip()
