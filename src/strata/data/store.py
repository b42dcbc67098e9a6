"""``DatasetStore``: team-scoped datasets and their immutable, content-addressed versions.

A version is written once (its records' blob, its record index, its row) and never changed; a version whose
content equals the dataset's newest published one is not made twice (the existing one is returned). Another
team's dataset is "not found", as if it did not exist.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select
from sqlalchemy.orm import Session

from strata.data.blobs import BlobStore
from strata.data.lineage import Lineage
from strata.data.records import Record, version_hash
from strata.data.tables import DatasetRow, RecordRow, VersionRow
from strata.errors import InternalError, InvalidRequest, NotFound

log = logging.getLogger(__name__)
PUBLISHED, REJECTED = "published", "rejected"


@dataclass(frozen=True, slots=True)
class DatasetVersion:
    id: str
    dataset: str  # the dataset's name
    dataset_id: str
    team: str
    number: int
    status: str
    content_hash: str
    record_count: int
    created_at: datetime
    parent: str | None  # the version it was derived from (a pipeline's input)
    pipeline_run: str | None
    source: dict[str, Any]
    checks: list[Any] | None
    blob: str

    @property
    def ref(self) -> str:
        return f"{self.dataset}@{self.number}"

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        out["ref"] = self.ref
        out.pop("blob")
        return out


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    id: str
    team: str
    name: str
    description: str | None
    created_at: datetime
    versions: int = 0
    latest: int | None = None  # newest published version number
    latest_hash: str | None = None

    def view(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out


@dataclass(slots=True)
class Diff:
    a: str
    b: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0

    def view(self) -> dict[str, Any]:
        return asdict(self)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``name@3`` / ``name@latest`` / ``name@<hash prefix>`` / ``name`` -> (name, version or None)."""
    name, sep, version = ref.partition("@")
    if not name:
        raise InvalidRequest(f"bad dataset reference {ref!r}: use NAME or NAME@VERSION", param="dataset")
    return name, (version or None) if sep else None


class DatasetStore:
    def __init__(self, db: Engine, blobs: BlobStore, lineage: Lineage | None = None) -> None:
        self.db, self.blobs = db, blobs
        self.lineage = lineage or Lineage(db)

    # datasets

    def create_dataset(self, team: str, name: str, description: str | None = None,
                       actor: str | None = None) -> DatasetInfo:
        """Get or create: creating an existing dataset returns it (a new description is not applied)."""
        _check_name(name)
        with self.db.begin() as conn:
            row = conn.execute(select(DatasetRow.id).where(DatasetRow.team == team, DatasetRow.name == name)).first()
            if row is None:
                values = {"id": "ds_" + uuid.uuid4().hex[:24], "team": team, "name": name,
                          "description": description, "created_at": datetime.now(UTC), "created_by": actor}
                conn.execute(insert(DatasetRow), [values])
        return self.get_dataset(team, name)

    def get_dataset(self, team: str, name_or_id: str) -> DatasetInfo:
        with Session(self.db) as conn:
            row = conn.scalars(select(DatasetRow).where(
                DatasetRow.team == team, (DatasetRow.name == name_or_id) | (DatasetRow.id == name_or_id))).first()
            if row is None:
                raise NotFound(f"no dataset {name_or_id!r} in team {team!r}", code="dataset_not_found")
            return self._info(conn, row)

    def list_datasets(self, teams: Sequence[str] | None) -> list[DatasetInfo]:
        """Every dataset of ``teams`` (None: all teams), by team and name."""
        with Session(self.db) as conn:
            q = select(DatasetRow).order_by(DatasetRow.team, DatasetRow.name)
            if teams is not None:
                q = q.where(DatasetRow.team.in_(list(teams)))
            return [self._info(conn, r) for r in conn.scalars(q).all()]

    def _info(self, conn: Session, row: DatasetRow) -> DatasetInfo:
        n = conn.execute(select(func.count()).where(VersionRow.dataset_id == row.id)).scalar_one()
        latest = conn.scalars(select(VersionRow).where(VersionRow.dataset_id == row.id, VersionRow.status == PUBLISHED)
                              .order_by(VersionRow.number.desc()).limit(1)).first()
        return DatasetInfo(row.id, row.team, row.name, row.description, _utc(row.created_at), n,
                           latest.number if latest else None, latest.content_hash if latest else None)

    # versions

    def add_version(self, team: str, name: str, records: Iterable[Record], *, source: dict[str, Any],
                    parent: str | None = None, pipeline_run: str | None = None, status: str = PUBLISHED,
                    checks: list[Any] | None = None, actor: str | None = None,
                    description: str | None = None) -> tuple[DatasetVersion, bool]:
        """Store records as a new version (the dataset is created if need be); (version, created).

        Content equal to the newest published version makes no new one: that version is returned."""
        items = list(records)
        _unique_ids(items)
        digest = version_hash(items)
        ds = self.create_dataset(team, name, description, actor)
        same = self._same_as_newest(ds, digest, status)
        if same is not None:
            return same, False
        blob = f"versions/{ds.id}/{digest}.jsonl"
        self.blobs.write_records(blob, items)
        with self.db.begin() as conn:
            number = (conn.execute(select(func.max(VersionRow.number)).where(VersionRow.dataset_id == ds.id))
                      .scalar() or 0) + 1
            vid = "dsv_" + uuid.uuid4().hex[:24]
            conn.execute(insert(VersionRow), [{
                "id": vid, "dataset_id": ds.id, "number": number, "status": status, "content_hash": digest,
                "record_count": len(items), "blob": blob, "parent_id": parent, "pipeline_run_id": pipeline_run,
                "source": source, "checks": checks, "created_at": datetime.now(UTC), "created_by": actor}])
            rows = [{"version_id": vid, "position": i, "record_id": r.id, "content_hash": r.content_hash}
                    for i, r in enumerate(items)]
            for i in range(0, len(rows), 1000):
                conn.execute(insert(RecordRow), rows[i:i + 1000])
        log.info("dataset %s/%s: version %d (%s, %d records, %s)", team, name, number, digest[:12], len(items),
                 status)
        return self.get_version(team, name, str(number), include_rejected=True), True

    def _same_as_newest(self, ds: DatasetInfo, digest: str, status: str) -> DatasetVersion | None:
        """The newest published version (or, for a rejected one, the newest version) if it has this content."""
        q = select(VersionRow).where(VersionRow.dataset_id == ds.id).order_by(VersionRow.number.desc()).limit(1)
        if status == PUBLISHED:
            q = q.where(VersionRow.status == PUBLISHED)
        with Session(self.db) as conn:
            row = conn.scalars(q).first()
        return _version(row, ds) if row is not None and row.content_hash == digest and row.status == status else None

    def get_version(self, team: str, name_or_id: str, version: str | int | None = None,
                    include_rejected: bool = False) -> DatasetVersion:
        """``version``: a number, ``latest`` (None), a content-hash prefix (6+ hex) or a version id."""
        ds = self.get_dataset(team, name_or_id)
        q = select(VersionRow).where(VersionRow.dataset_id == ds.id)
        v = None if version is None else str(version)
        if v is None or v == "latest":
            q = q.where(VersionRow.status == PUBLISHED).order_by(VersionRow.number.desc()).limit(1)
        elif v.isdigit():
            q = q.where(VersionRow.number == int(v))
        elif v.startswith("dsv_"):
            q = q.where(VersionRow.id == v)
        elif len(v) >= 6:
            q = q.where(VersionRow.content_hash.startswith(v.lower())).order_by(VersionRow.number.desc()).limit(1)
            if not include_rejected:
                q = q.where(VersionRow.status == PUBLISHED)
        else:
            raise InvalidRequest(f"bad version {v!r}: a number, latest or a content hash prefix", param="version")
        with Session(self.db) as conn:
            row = conn.scalars(q).first()
        if row is None:
            what = f"{ds.name}@{v}" if v else f"{ds.name} (no published version)"
            raise NotFound(f"no version {what} in team {team!r}", code="dataset_version_not_found")
        return _version(row, ds)

    def version_by_id(self, team: str, version_id: str) -> DatasetVersion:
        with Session(self.db) as conn:
            row = conn.get(VersionRow, version_id)
            ds = conn.get(DatasetRow, row.dataset_id) if row else None
        if row is None or ds is None or ds.team != team:
            raise NotFound(f"no dataset version {version_id!r} in team {team!r}", code="dataset_version_not_found")
        return _version(row, DatasetInfo(ds.id, ds.team, ds.name, ds.description, _utc(ds.created_at)))

    def list_versions(self, team: str, name: str) -> list[DatasetVersion]:
        ds = self.get_dataset(team, name)
        with Session(self.db) as conn:
            rows = conn.scalars(select(VersionRow).where(VersionRow.dataset_id == ds.id)
                                .order_by(VersionRow.number)).all()
        return [_version(r, ds) for r in rows]

    def iter_records(self, version: DatasetVersion, verify: bool = True) -> Iterator[Record]:
        """The version's records in stored order; each one's hash is checked against its content, so an
        edited blob is an error rather than silently different data."""
        from strata.data.records import record_hash

        for line in self.blobs.read_lines(version.blob):
            rec = Record(line["id"], line["hash"], line["data"])
            if verify and record_hash(rec.data) != rec.content_hash:
                raise InternalError(f"dataset {version.ref}: record {rec.id!r} does not match its hash; the "
                                    f"blob {version.blob} was modified")
            yield rec

    def record_index(self, version: DatasetVersion) -> dict[str, str]:
        """record id -> content hash, from the database (no blob read)."""
        with self.db.connect() as conn:
            rows = conn.execute(select(RecordRow.record_id, RecordRow.content_hash)
                                .where(RecordRow.version_id == version.id).order_by(RecordRow.position))
            return {r[0]: r[1] for r in rows}

    def diff(self, a: DatasetVersion, b: DatasetVersion) -> Diff:
        """Records added, removed and changed (same id, other content) from ``a`` to ``b``."""
        left, right = self.record_index(a), self.record_index(b)
        out = Diff(a.ref, b.ref)
        for rid, h in right.items():
            if rid not in left:
                out.added.append(rid)
            elif left[rid] != h:
                out.changed.append(rid)
            else:
                out.unchanged += 1
        out.removed = [rid for rid in left if rid not in right]
        return out


def _version(row: VersionRow, ds: DatasetInfo) -> DatasetVersion:
    return DatasetVersion(row.id, ds.name, ds.id, ds.team, row.number, row.status, row.content_hash,
                          row.record_count, _utc(row.created_at), row.parent_id, row.pipeline_run_id, row.source,
                          row.checks, row.blob)


def _unique_ids(items: Sequence[Record]) -> None:
    seen: set[str] = set()
    for r in items:
        if r.id in seen:
            raise InvalidRequest(f"duplicate record id {r.id!r}", param="id")
        seen.add(r.id)


def _check_name(name: str) -> None:
    if not name or len(name) > 200 or "@" in name or "/" in name or name != name.strip():
        raise InvalidRequest(f"bad dataset name {name!r}: 1-200 characters, no '@' or '/'", param="name")


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
