"""Typed tables. Schema changes go through an Alembic migration in ``migrations/versions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def id_column() -> Mapped[int]:
    """An auto-incrementing 64-bit id (SQLite's INTEGER PRIMARY KEY is 64-bit already)."""
    return mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}


class ApiKey(Base):
    """An API key. Only the SHA-256 of the secret is stored; the secret is shown once."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    team: Mapped[str] = mapped_column(String(200), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(24))
    allowed_routes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    updated_seq: Mapped[int] = mapped_column(BigInteger, default=0, index=True)
    role: Mapped[str | None] = mapped_column(String(20), nullable=True)  # admin, operator, analyst, member
    scopes: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # {"teams": [...], "routes": [...]}
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)  # requests in flight at once


class LedgerRow(Base):
    """One row per request, success or failure: the usage ledger."""

    __tablename__ = "ledger"

    id: Mapped[int] = id_column()
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    endpoint: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    team: Mapped[str | None] = mapped_column(String(200), nullable=True)
    user: Mapped[str | None] = mapped_column(String(200), nullable=True)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    route: Mapped[str | None] = mapped_column(String(200), nullable=True)
    deployment: Mapped[str | None] = mapped_column(String(200), nullable=True)
    engine: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model: Mapped[str | None] = mapped_column(String(500), nullable=True)
    stream: Mapped[bool] = mapped_column(Boolean, default=False)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    tpot_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    status: Mapped[int] = mapped_column(Integer)
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)  # of the deployment that answered
    tier: Mapped[str | None] = mapped_column(String(16), nullable=True)  # complexity routing: cheap | strong
    route_score: Mapped[float | None] = mapped_column(Float, nullable=True)  # complexity score, 0..1
    saved_usd: Mapped[float | None] = mapped_column(Float, nullable=True)  # a cache hit: cost it avoided
    cached_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)  # prompt tokens from the engine's cache
    trace_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)  # its trace (hex), if traced
    guard: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)  # guard findings (no text)
    rag: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # chunks a RAG request used (no text)

    __table_args__ = (
        Index("ix_ledger_started_at", "started_at"),
        Index("ix_ledger_team_started", "team", "started_at"),
    )


class RouteChange(Base):
    """Audit trail of run-time route changes; the newest ``after`` of a route overrides the config file."""

    __tablename__ = "route_changes"

    id: Mapped[int] = id_column()
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    route: Mapped[str] = mapped_column(String(200), index=True)
    action: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(2000), nullable=True)


class Feedback(Base):
    """A score given to a served request (user feedback or an evaluator), attributed to its deployment."""

    __tablename__ = "feedback"

    id: Mapped[int] = id_column()
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    route: Mapped[str | None] = mapped_column(String(200), nullable=True)
    deployment: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    comment: Mapped[str | None] = mapped_column(String(2000), nullable=True)


class Event(Base):
    """Something an operator should know happened: a canary rolled back or promoted, a budget crossed."""

    __tablename__ = "events"

    id: Mapped[int] = id_column()
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str | None] = mapped_column(String(200), nullable=True)
    message: Mapped[str] = mapped_column(String(2000))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    __table_args__ = (Index("ix_events_kind_at", "kind", "at"),)


class ShadowResult(Base):
    """One mirrored request: the served answer next to the shadow deployment's, and how they compare."""

    __tablename__ = "shadow_results"

    id: Mapped[int] = id_column()
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    request_id: Mapped[str] = mapped_column(String(128))
    route: Mapped[str] = mapped_column(String(200))
    primary_deployment: Mapped[str | None] = mapped_column(String(200), nullable=True)
    shadow_deployment: Mapped[str] = mapped_column(String(200))
    primary_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    shadow_answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    primary_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    shadow_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    primary_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    shadow_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    primary_cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    shadow_cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    shadow_error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    exact_match: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    agreement: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (Index("ix_shadow_results_route_at", "route", "at"),)


class Policy(Base):
    """A rate limit or budget set at run time (admin API, CLI); the config file's come on top."""

    __tablename__ = "policies"

    id: Mapped[int] = id_column()
    kind: Mapped[str] = mapped_column(String(16))  # limit | budget
    scope: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(String(200))
    period: Mapped[str] = mapped_column(String(16), default="")  # budgets: day | month | total
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_by: Mapped[str] = mapped_column(String(200))

    __table_args__ = (Index("ux_policies_identity", "kind", "scope", "subject", "period", unique=True),)


class PolicyChange(Base):
    """Audit trail of limit and budget changes: who, when, before/after."""

    __tablename__ = "policy_changes"

    id: Mapped[int] = id_column()
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(16))  # set | remove
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class JournalMark(Base):
    """How far each ledger journal segment is in the ledger: its byte offset, written with the rows."""

    __tablename__ = "ledger_journal"

    segment: Mapped[str] = mapped_column(String(200), primary_key=True)  # the segment's file name
    committed: Mapped[int] = mapped_column(BigInteger)  # bytes of the segment whose rows are in ``ledger``
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StoredResponse(Base):
    """A Responses API answer (``store: true``): the conversation up to and including it, so a later request can
    continue it (``previous_response_id``), readable only by the key that made it, until ``expires_at``."""

    __tablename__ = "responses"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32))
    team: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    messages: Mapped[list[Any]] = mapped_column(JSON)  # chat messages: the prior turns, the input, the answer
    response: Mapped[dict[str, Any]] = mapped_column(JSON)  # the Response object, as GET /v1/responses/{id} shows it


class TraceRow(Base):
    """A request's trace (``observe.trace_store``): its root span's summary in columns, every span in ``spans``.

    Keyed by its own id, not the trace id: requests that continue one client ``traceparent`` share a trace id.
    """

    __tablename__ = "traces"

    id: Mapped[int] = id_column()
    trace_id: Mapped[str] = mapped_column(String(32), index=True)  # W3C trace id, hex
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    duration_ms: Mapped[float] = mapped_column(Float)
    name: Mapped[str] = mapped_column(String(200))  # the root span's: "chat <route>", ...
    route: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the root's http.response.status_code
    spans: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # Span.to_dict() of each, the root first


class AuditEntry(Base):
    """One security-relevant change, hash-chained to the one before it (``hash`` covers ``prev_hash`` and this
    entry's fields), so an edited, deleted or reordered entry breaks the chain."""

    __tablename__ = "audit_log"

    id: Mapped[int] = id_column()
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)  # position in the chain, from 1
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    subject: Mapped[str] = mapped_column(String(400))
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class SecretRow(Base):
    """A secret (an upstream API key) encrypted at rest; ``key_id`` names the encryption key, for rotation."""

    __tablename__ = "secrets"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    ciphertext: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
