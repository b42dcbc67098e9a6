"""model lifecycle: registered models, versions, aliases, approvals, eval suites and runs

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_AT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "registered_models",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("description", sa.String(2000), nullable=True),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("artifact_uri", sa.String(2000), nullable=False),
        sa.Column("content_hash", sa.String(80), nullable=True),
        sa.Column("engine_type", sa.String(100), nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("run_id", sa.String(200), nullable=True),
        sa.Column("dataset_versions", sa.JSON, nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("approval", sa.String(20), nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=True),
        sa.Column("approved_at", _AT, nullable=True),
        sa.Column("approval_note", sa.String(2000), nullable=True),
        sa.UniqueConstraint("model", "version", name="ux_model_versions_model_version"),
    )
    op.create_index("ix_model_versions_model", "model_versions", ["model"])
    op.create_table(
        "model_aliases",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("alias", sa.String(100), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("pending", sa.Integer, nullable=True),
        sa.Column("updated_at", _AT, nullable=False),
        sa.Column("updated_by", sa.String(200), nullable=False),
    )
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("suite", sa.String(200), nullable=False),
        sa.Column("suite_spec", sa.JSON, nullable=False),
        sa.Column("target", sa.String(300), nullable=False),
        sa.Column("route", sa.String(300), nullable=False),
        sa.Column("model_version", sa.String(300), nullable=True),
        sa.Column("baseline", sa.String(64), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("cases_total", sa.Integer, nullable=False),
        sa.Column("summary", sa.JSON, nullable=True),
        sa.Column("created_at", _AT, nullable=False),
        sa.Column("finished_at", _AT, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
    )
    op.create_index("ix_eval_runs_suite", "eval_runs", ["suite"])
    op.create_index("ix_eval_runs_model_version", "eval_runs", ["model_version"])
    op.create_table(
        "eval_results",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("case_id", sa.String(200), nullable=False),
        sa.Column("output", sa.Text, nullable=True),
        sa.Column("error", sa.String(2000), nullable=True),
        sa.Column("scores", sa.JSON, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("latency_s", sa.Float, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("tokens", sa.Integer, nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("finished_at", _AT, nullable=False),
        sa.UniqueConstraint("run_id", "case_id", name="ux_eval_results_run_case"),
    )
    op.create_index("ix_eval_results_run_id", "eval_results", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_eval_results_run_id", "eval_results")
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_model_version", "eval_runs")
    op.drop_index("ix_eval_runs_suite", "eval_runs")
    op.drop_table("eval_runs")
    op.drop_table("model_aliases")
    op.drop_index("ix_model_versions_model", "model_versions")
    op.drop_table("model_versions")
    op.drop_table("registered_models")
