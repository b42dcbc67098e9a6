"""data: datasets, versions, records, pipelines, step cache, lineage

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.String(2000), nullable=True),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
    )
    op.create_index("ux_datasets_team_name", "datasets", ["team", "name"], unique=True)
    op.create_table(
        "dataset_versions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("dataset_id", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("blob", sa.String(1000), nullable=False),
        sa.Column("parent_id", sa.String(32), nullable=True),
        sa.Column("pipeline_run_id", sa.String(32), nullable=True),
        sa.Column("source", sa.JSON, nullable=False),
        sa.Column("checks", sa.JSON, nullable=True),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_dataset_versions_dataset_id", "dataset_versions", ["dataset_id"])
    op.create_index("ix_dataset_versions_content_hash", "dataset_versions", ["content_hash"])
    op.create_index("ux_dataset_versions_number", "dataset_versions", ["dataset_id", "number"], unique=True)
    op.create_table(
        "dataset_records",
        sa.Column("version_id", sa.String(32), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("record_id", sa.String(400), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_dataset_records_id", "dataset_records", ["version_id", "record_id"])
    op.create_table(
        "pipeline_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("input_version_id", sa.String(32), nullable=False),
        sa.Column("output_version_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("steps", sa.JSON, nullable=False),
        sa.Column("error", sa.String(2000), nullable=True),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=True),
    )
    op.create_index("ix_pipeline_runs_team", "pipeline_runs", ["team"])
    op.create_table(
        "pipeline_step_cache",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("team", sa.String(200), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("output_hash", sa.String(64), nullable=False),
        sa.Column("record_count", sa.Integer, nullable=False),
        sa.Column("blob", sa.String(1000), nullable=False),
        sa.Column("created_at", _AT, nullable=False),
    )
    op.create_table(
        "lineage_edges",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("src_kind", sa.String(32), nullable=False),
        sa.Column("src_id", sa.String(500), nullable=False),
        sa.Column("dst_kind", sa.String(32), nullable=False),
        sa.Column("dst_id", sa.String(500), nullable=False),
        sa.Column("relation", sa.String(64), nullable=True),
        sa.Column("team", sa.String(200), nullable=True),
        sa.Column("created_at", _AT, nullable=False),
    )
    op.create_index("ix_lineage_src", "lineage_edges", ["src_kind", "src_id"])
    op.create_index("ix_lineage_dst", "lineage_edges", ["dst_kind", "dst_id"])


def downgrade() -> None:
    for table in ("lineage_edges", "pipeline_step_cache", "pipeline_runs", "dataset_records", "dataset_versions",
                  "datasets"):
        op.drop_table(table)
