"""ledger: cost a cache hit avoided; prompt tokens the engine served from its prompt cache

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger") as t:
        t.add_column(sa.Column("saved_usd", sa.Float(), nullable=True))
        t.add_column(sa.Column("cached_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ledger") as t:
        t.drop_column("cached_tokens")
        t.drop_column("saved_usd")
