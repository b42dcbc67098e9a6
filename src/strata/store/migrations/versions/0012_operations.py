"""operations: online quality scores, drift samples and reports, alert forwarding

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # drift
    op.create_table(
        "drift_samples",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("answer_tokens", sa.Integer(), nullable=True),
        sa.Column("refusal", sa.Boolean(), nullable=True),
        sa.Column("tool_call", sa.Boolean(), nullable=True),
        sa.Column("language", sa.String(length=8), nullable=True),
        sa.Column("prompt_vec", sa.LargeBinary(), nullable=True),
        sa.Column("answer_vec", sa.LargeBinary(), nullable=True),
        sa.Column("retrieved_vec", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_drift_samples_route_at", "drift_samples", ["route", "at"])
    op.create_index("ix_drift_samples_at", "drift_samples", ["at"])
    op.create_table(
        "drift_baselines",
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("route"),
    )
    op.create_table(
        "drift_reports",
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detected", sa.Boolean(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("route"),
    )
    # end drift
    # quality
    op.create_table(
        "quality_scores",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("trace_id", sa.String(length=32), nullable=True),
        sa.Column("route", sa.String(length=200), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("team", sa.String(length=200), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("scorer", sa.String(length=64), nullable=False),
        sa.Column("scorer_version", sa.String(length=128), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=True),
        sa.Column("rationale", sa.String(length=2000), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_quality_scores_request_id", "quality_scores", ["request_id"])
    op.create_index("ix_quality_scores_route_at", "quality_scores", ["route", "at"])
    op.create_index("ix_quality_scores_at", "quality_scores", ["at"])
    # end quality


def downgrade() -> None:
    # quality
    op.drop_index("ix_quality_scores_at", table_name="quality_scores")
    op.drop_index("ix_quality_scores_route_at", table_name="quality_scores")
    op.drop_index("ix_quality_scores_request_id", table_name="quality_scores")
    op.drop_table("quality_scores")
    # end quality
    # drift
    op.drop_table("drift_reports")
    op.drop_table("drift_baselines")
    op.drop_index("ix_drift_samples_at", table_name="drift_samples")
    op.drop_index("ix_drift_samples_route_at", table_name="drift_samples")
    op.drop_table("drift_samples")
    # end drift
