"""Persistence: SQLAlchemy 2 typed tables, Alembic migrations; SQLite by default, PostgreSQL by URL."""
