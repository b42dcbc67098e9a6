"""traces: recent request traces (strata traces, /admin/traces); ledger: each row's trace id

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("spans", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_traces_trace_id", "traces", ["trace_id"])
    op.create_index("ix_traces_request_id", "traces", ["request_id"])
    op.create_index("ix_traces_started_at", "traces", ["started_at"])
    op.create_index("ix_traces_route", "traces", ["route"])
    with op.batch_alter_table("ledger") as t:
        t.add_column(sa.Column("trace_id", sa.String(length=32), nullable=True))
    op.create_index("ix_ledger_trace_id", "ledger", ["trace_id"])


def downgrade() -> None:
    op.drop_index("ix_ledger_trace_id", table_name="ledger")
    with op.batch_alter_table("ledger") as t:
        t.drop_column("trace_id")
    for column in ("route", "started_at", "request_id", "trace_id"):
        op.drop_index(f"ix_traces_{column}", table_name="traces")
    op.drop_table("traces")
