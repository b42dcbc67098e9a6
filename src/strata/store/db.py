"""Database engine creation and schema migration (Alembic, run programmatically at startup)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from strata.errors import ConfigError

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create a pooled engine; a URL SQLAlchemy cannot use becomes one ``ConfigError`` line."""
    try:
        return _create(url)
    except (ArgumentError, ImportError) as exc:
        raise ConfigError(f"invalid database.url: {' '.join(str(exc).split())}") from None


def _create(url: str) -> Engine:
    """SQLite gets WAL and a busy timeout so readers never block the writer."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; idempotent."""
    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    try:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        detail = " ".join(str(cause).split())  # driver messages span lines; the CLI prints one
        raise ConfigError(f"database {engine.url.render_as_string()}: {cause.__class__.__name__}: {detail}") from None


def open_database(url: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine
