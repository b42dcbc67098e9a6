"""API keys: creation, hashing, listing, revocation (the store), shared by CLI and admin API.

A key is ``sk-strata-`` + 256 random bits. Only its SHA-256 is stored: the secret has full entropy, so a
slow password hash would add latency to every request without adding safety.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, false, func, select, text, update
from sqlalchemy.orm import Session

from strata.errors import InvalidRequest, NotFound
from strata.governance.roles import PERMISSIONS, UNSCOPED, Scopes, check_role, role_of
from strata.store.tables import ApiKey

KEY_PREFIX = "sk-strata-"
MAX_NAME = 200  # the width of api_keys.name and api_keys.team


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the identity every request is attributed to, with its role and scopes
    (``governance.roles``). ``is_admin`` is kept in step with the role (admin or not)."""

    key_id: str
    name: str
    team: str
    allowed_routes: frozenset[str] | None
    is_admin: bool
    expires_at: datetime | None = None
    revoked: bool = False
    role: str = ""  # empty: derived from is_admin
    scopes: Scopes = UNSCOPED
    max_concurrency: int | None = None  # requests in flight at once (``governance.abuse``); None: no cap

    def __post_init__(self) -> None:
        role = role_of(self.role or None, self.is_admin)
        object.__setattr__(self, "role", role)
        object.__setattr__(self, "is_admin", role == "admin")

    def may_use(self, route: str) -> bool:
        return self.allowed_routes is None or route in self.allowed_routes

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    principal: Principal
    secret: str


def check_routes(allowed: list[str] | None, known: list[str]) -> None:
    """A key restricted to a route that does not exist could never be used: say so when it is created."""
    unknown = sorted(set(allowed or ()) - set(known))
    if unknown:
        raise InvalidRequest(f"unknown route(s) {', '.join(unknown)}; configured: {', '.join(sorted(known))}",
                             param="allowed_routes")


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def principal_of(row: ApiKey) -> Principal:
    return Principal(
        key_id=row.id,
        name=row.name,
        team=row.team,
        allowed_routes=frozenset(row.allowed_routes) if row.allowed_routes is not None else None,
        is_admin=row.is_admin,
        expires_at=_aware(row.expires_at),
        revoked=row.revoked_at is not None,
        role=role_of(row.role, row.is_admin),
        scopes=Scopes.of(row.scopes),
        max_concurrency=row.max_concurrency,
    )


def _aware(dt: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt


class KeyStore:
    """Durable key operations on the database (synchronous; the server calls them off the event loop)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        name: str,
        team: str = "default",
        allowed_routes: list[str] | None = None,
        expires_at: datetime | None = None,
        is_admin: bool = False,
        secret: str | None = None,
        role: str | None = None,
        scopes: Scopes = UNSCOPED,
        max_concurrency: int | None = None,
    ) -> CreatedKey:
        """A new key; ``role`` wins over ``is_admin`` (the older flag, kept: ``is_admin=True`` is role admin)."""
        if not name.strip() or not team.strip():
            raise InvalidRequest("key name and team must not be empty", param="name")
        if len(name) > MAX_NAME or len(team) > MAX_NAME:  # PostgreSQL would refuse the row; SQLite would not
            raise InvalidRequest(f"key name and team must be at most {MAX_NAME} characters", param="name")
        if expires_at is not None and _aware(expires_at) <= datetime.now(UTC):  # type: ignore[operator]
            raise InvalidRequest("expires_at is in the past", param="expires_at")
        if max_concurrency is not None and max_concurrency < 1:
            raise InvalidRequest("max_concurrency must be at least 1", param="max_concurrency")
        role = check_role(role or ("admin" if is_admin else "member"))
        secret = secret or KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(
            id=uuid.uuid4().hex[:16],
            name=name,
            team=team,
            key_hash=hash_key(secret),
            prefix=secret[:14],
            allowed_routes=sorted(set(allowed_routes)) if allowed_routes is not None else None,
            is_admin=role == "admin",
            role=role,
            scopes=scopes.to_json(),
            max_concurrency=max_concurrency,
            created_at=datetime.now(UTC),
            expires_at=expires_at,
            revoked_at=None,
        )
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            self._lock_for_write(s)
            row.updated_seq = self._next_seq(s)
            s.add(row)
        return CreatedKey(principal_of(row), secret)

    def revoke(self, key_id: str) -> Principal:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            self._lock_for_write(s)
            row = s.get(ApiKey, key_id)
            if row is None:
                raise NotFound(f"no key with id {key_id!r}", param="key_id", code="key_not_found")
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
                row.updated_seq = self._next_seq(s)
            return principal_of(row)

    def list(self) -> list[tuple[ApiKey, Principal]]:
        with Session(self.engine, expire_on_commit=False) as s:
            rows = s.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
            s.expunge_all()
        for r in rows:
            r.created_at = _aware(r.created_at)  # type: ignore[assignment]
        return [(r, principal_of(r)) for r in rows]

    def find(self, key_hash: str) -> Principal | None:
        with Session(self.engine, expire_on_commit=False) as s:
            row = s.scalars(select(ApiKey).where(ApiKey.key_hash == key_hash)).first()
            return principal_of(row) if row else None

    def changes_since(self, seq: int) -> tuple[int, dict[str, Principal]]:
        """Keys changed after ``seq``, by hash; the server's cache applies them."""
        with Session(self.engine, expire_on_commit=False) as s:
            rows = s.scalars(select(ApiKey).where(ApiKey.updated_seq > seq)).all()
            top = max((r.updated_seq for r in rows), default=seq)
            return top, {r.key_hash: principal_of(r) for r in rows}

    def admin_exists(self) -> bool:
        with Session(self.engine, expire_on_commit=False) as s:
            q = select(func.count()).select_from(ApiKey).where(ApiKey.is_admin, ApiKey.revoked_at.is_(None))
            return bool(s.scalar(q))

    @staticmethod
    def _lock_for_write(s: Session) -> None:
        """Serialise key writers until commit, so change numbers are unique and commit in order.

        Without it two writers (CLI and server, or two replicas) read the same maximum, and a sync that
        runs between their commits skips the second change for good: a revoked key stays usable.
        Taken first in the transaction, before any row is touched, so writers cannot deadlock.
        """
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE"))
        else:  # SQLite: an empty UPDATE takes the database write lock
            s.execute(update(ApiKey).where(false()).values(updated_seq=ApiKey.updated_seq))

    @staticmethod
    def _next_seq(s: Session) -> int:
        return int(s.scalar(select(func.coalesce(func.max(ApiKey.updated_seq), 0))) or 0) + 1
