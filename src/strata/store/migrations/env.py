"""Alembic environment: uses the connection handed over by ``strata.store.db.migrate``."""

from alembic import context

from strata.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
