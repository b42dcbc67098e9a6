"""Tables of the data layer (migration ``0013``): datasets, their versions and record index, pipeline runs,
the step-output cache and the generic lineage graph."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from strata.store.tables import Base, id_column


class DatasetRow(Base):
    """A named dataset of one team; its content lives in its versions."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)

    __table_args__ = (Index("ux_datasets_team_name", "team", "name", unique=True),)


class VersionRow(Base):
    """One immutable version: written once, never updated. ``status`` is ``published`` or ``rejected`` (a
    quality check failed: kept with its report, never served as the dataset's content)."""

    __tablename__ = "dataset_versions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(String(32), index=True)
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    record_count: Mapped[int] = mapped_column(Integer)
    blob: Mapped[str] = mapped_column(String(1000))  # path of its records under data.storage_url
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pipeline_run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"kind": "jsonl", "name": ...} / {"kind": "ledger", ...}
    checks: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)  # check results, failures included
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)

    __table_args__ = (Index("ux_dataset_versions_number", "dataset_id", "number", unique=True),)


class RecordRow(Base):
    """Which records a version holds (id, content hash, position): diffs and lineage query this, not blobs."""

    __tablename__ = "dataset_records"

    version_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[str] = mapped_column(String(400))
    content_hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (Index("ix_dataset_records_id", "version_id", "record_id"),)


class PipelineRunRow(Base):
    """One run of a pipeline over an input version: its steps (version, params, cache hit) and check report."""

    __tablename__ = "pipeline_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    team: Mapped[str] = mapped_column(String(200), index=True)
    pipeline: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    input_version_id: Mapped[str] = mapped_column(String(32))
    output_version_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # published | rejected | failed
    steps: Mapped[list[Any]] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)


class StepCacheRow(Base):
    """A step's output for (team, input hash, step code version, params hash): a re-run reuses it."""

    __tablename__ = "pipeline_step_cache"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    team: Mapped[str] = mapped_column(String(200))
    step: Mapped[str] = mapped_column(String(200))
    output_hash: Mapped[str] = mapped_column(String(64))
    record_count: Mapped[int] = mapped_column(Integer)
    blob: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LineageEdge(Base):
    """``src`` produced or fed ``dst``. Kinds: ``record`` (``<version id>/<record id>``), ``dataset_version``,
    ``step_run``, ``pipeline_run``, and the RAG/gateway's ``document``, ``chunk``, ``request``."""

    __tablename__ = "lineage_edges"

    id: Mapped[int] = id_column()
    src_kind: Mapped[str] = mapped_column(String(32))
    src_id: Mapped[str] = mapped_column(String(500))
    dst_kind: Mapped[str] = mapped_column(String(32))
    dst_id: Mapped[str] = mapped_column(String(500))
    relation: Mapped[str | None] = mapped_column(String(64), nullable=True)  # e.g. a step name, "retrieved"
    team: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_lineage_src", "src_kind", "src_id"),
        Index("ix_lineage_dst", "dst_kind", "dst_id"),
    )
