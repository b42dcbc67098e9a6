"""``DataService``: what the admin API and the CLI share: the store, dataset creation from any source, and
pipeline runs (with the embed callable the caller has: the gateway's accounted route, or none in the CLI)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from strata.data.blobs import BlobStore
from strata.data.checks import CheckContext, run_checks
from strata.data.config import DataSettings
from strata.data.pipeline import PipelineRunner, PipelineSpec, Progress, RunResult
from strata.data.records import make_records
from strata.data.sources import LedgerFilter, read_ledger, read_path
from strata.data.steps import SyncEmbed
from strata.data.store import PUBLISHED, REJECTED, DatasetStore, DatasetVersion


@dataclass(frozen=True, slots=True)
class Created:
    version: DatasetVersion
    created: bool  # False: same content as the newest published version, which is returned


class DataService:
    def __init__(self, db: Engine, settings: DataSettings, data_dir: Path) -> None:
        self.settings = settings
        self.store = DatasetStore(db, BlobStore.for_settings(settings.storage_url, data_dir))

    def create(self, team: str, name: str, rows: Iterable[dict[str, Any]], *, source: dict[str, Any],
               id_field: str | None = "id", description: str | None = None, actor: str | None = None,
               checks: list[tuple[str, dict[str, Any]]] | None = None) -> Created:
        """A version from JSON objects; ``checks`` (optional) gate it like a pipeline's do."""
        records = list(make_records(rows, id_field))
        results = run_checks(checks, records, CheckContext()) if checks else []
        status = PUBLISHED if all(r.passed for r in results) else REJECTED
        version, created = self.store.add_version(team, name, records, source=source, status=status,
                                                  checks=[r.view() for r in results] or None, actor=actor,
                                                  description=description)
        return Created(version, created)

    def create_from_path(self, team: str, name: str, path: Path, fmt: str | None = None, **kw: Any) -> Created:
        kind = "folder" if path.is_dir() else (fmt or path.suffix.lstrip(".")).lower()
        id_field = "name" if path.is_dir() else kw.pop("id_field", "id")
        kw.pop("id_field", None)
        return self.create(team, name, read_path(path, fmt), source={"kind": kind, "path": path.name},
                           id_field=id_field, **kw)

    def create_from_ledger(self, team: str, name: str, flt: LedgerFilter, **kw: Any) -> Created:
        source = {"kind": "ledger", "route": flt.route, "status": flt.status, "endpoint": flt.endpoint,
                  "since": flt.since.isoformat() if flt.since else None,
                  "until": flt.until.isoformat() if flt.until else None}
        return self.create(team, name, read_ledger(self.store.db, flt), source=source, **kw)

    def run_pipeline(self, team: str, spec: PipelineSpec, input_ref: str, *, embed: SyncEmbed | None = None,
                     progress: Progress | None = None, actor: str | None = None) -> RunResult:
        return PipelineRunner(self.store, embed, progress).run(team, spec, input_ref, actor)
