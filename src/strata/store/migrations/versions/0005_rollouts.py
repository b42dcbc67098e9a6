"""rollouts: deployment role, tier and score in the ledger; change reasons; events; shadow comparisons

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("ledger") as t:
        t.add_column(sa.Column("role", sa.String(length=16), nullable=True))
        t.add_column(sa.Column("tier", sa.String(length=16), nullable=True))
        t.add_column(sa.Column("route_score", sa.Float(), nullable=True))
    with op.batch_alter_table("route_changes") as t:
        t.add_column(sa.Column("reason", sa.String(length=2000), nullable=True))
    op.create_table(
        "events",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=True),
        sa.Column("message", sa.String(length=2000), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_events_kind_at", "events", ["kind", "at"])
    op.create_table(
        "shadow_results",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("primary_deployment", sa.String(length=200), nullable=True),
        sa.Column("shadow_deployment", sa.String(length=200), nullable=False),
        sa.Column("primary_answer", sa.Text(), nullable=True),
        sa.Column("shadow_answer", sa.Text(), nullable=True),
        sa.Column("primary_ms", sa.Float(), nullable=True),
        sa.Column("shadow_ms", sa.Float(), nullable=True),
        sa.Column("primary_tokens", sa.Integer(), nullable=True),
        sa.Column("shadow_tokens", sa.Integer(), nullable=True),
        sa.Column("primary_cost", sa.Float(), nullable=True),
        sa.Column("shadow_cost", sa.Float(), nullable=True),
        sa.Column("shadow_error", sa.String(length=200), nullable=True),
        sa.Column("exact_match", sa.Boolean(), nullable=True),
        sa.Column("agreement", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_shadow_results_route_at", "shadow_results", ["route", "at"])


def downgrade() -> None:
    op.drop_index("ix_shadow_results_route_at", table_name="shadow_results")
    op.drop_table("shadow_results")
    op.drop_index("ix_events_kind_at", table_name="events")
    op.drop_table("events")
    with op.batch_alter_table("route_changes") as t:
        t.drop_column("reason")
    with op.batch_alter_table("ledger") as t:
        t.drop_column("route_score")
        t.drop_column("tier")
        t.drop_column("role")
