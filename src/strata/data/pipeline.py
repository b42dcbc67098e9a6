"""Pipelines: declared steps over an input version, producing a new version of an output dataset with
record-level lineage, gated by quality checks, with each step's output cached.

A spec (YAML or a dict)::

    name: faq-clean
    output: faq-clean            # the output dataset (default: <input>-<name>)
    steps:
      - clean: {fields: [text]}
      - deduplicate: {near: true}
      - step: mypkg.steps:redact  # any module:function; version: the hash of its source unless given
        version: "2"
    checks:
      - expect_column_values_to_not_be_null: {column: text}

Step cache key: SHA-256 of (team, the step's input content hash, step name, code version, params hash); a
re-run over unchanged input reads every step's output from the cache and runs no step function.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator
from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from strata.config.base import Strict
from strata.data.checks import CheckContext, CheckResult, run_checks
from strata.data.lineage import Edge, record_node
from strata.data.records import Record, canonical, version_hash, with_id
from strata.data.steps import Out, StepContext, StepDef, SyncEmbed, resolve
from strata.data.store import PUBLISHED, REJECTED, DatasetStore, DatasetVersion, parse_ref
from strata.data.tables import PipelineRunRow, StepCacheRow
from strata.errors import InvalidRequest, NotFound

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (what, done, total)
NEEDS_PREVIOUS = {"expect_embedding_shift_below"}  # checks that compare with the newest published version


def _shorthand(raw: Any, key: str) -> Any:
    """``{clean: {...}}`` -> ``{step: clean, params: {...}}``."""
    if isinstance(raw, str):
        return {key: raw}
    if isinstance(raw, dict) and key not in raw and len(raw) == 1:
        name, params = next(iter(raw.items()))
        return {key: name, "params": params or {}}
    return raw


class StepSpec(Strict):
    step: str
    version: str | None = Field(None, description="Explicit step version (default: the hash of its code)")
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, raw: Any) -> Any:
        return _shorthand(raw, "step")


class CheckSpec(Strict):
    check: str
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _short(cls, raw: Any) -> Any:
        return _shorthand(raw, "check")


class PipelineSpec(Strict):
    name: str = Field(min_length=1, max_length=200)
    output: str | None = None
    steps: list[StepSpec] = Field(min_length=1)
    checks: list[CheckSpec] = Field(default_factory=list)


def load_spec(source: Path | dict[str, Any]) -> PipelineSpec:
    try:
        raw = yaml.safe_load(source.read_text()) if isinstance(source, Path) else source
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidRequest(f"cannot read pipeline {source}: {exc}") from None
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidRequest(f"pipeline spec: {where}: {err['msg']}", param=where) from None


@dataclass(slots=True)
class StepRun:
    index: int
    step: str
    version: str
    params_hash: str
    cache_key: str
    cached: bool
    input_count: int
    output_count: int
    output_hash: str
    seconds: float

    @property
    def node(self) -> str:
        return f"{self.step}@{self.version}#{self.params_hash[:12]}"


@dataclass(slots=True)
class RunResult:
    id: str
    team: str
    pipeline: str
    status: str  # published | rejected
    input: DatasetVersion
    output: DatasetVersion
    created: bool  # False: the output equals the newest published version, which is returned
    steps: list[StepRun] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "team": self.team, "pipeline": self.pipeline, "status": self.status,
                "input": self.input.ref, "output": self.output.ref, "output_version": self.output.view(),
                "created": self.created, "steps": [asdict(s) | {"node": s.node} for s in self.steps],
                "checks": [c.view() for c in self.checks]}


class PipelineRunner:
    def __init__(self, store: DatasetStore, embed: SyncEmbed | None = None, progress: Progress | None = None):
        self.store, self.embed, self.progress = store, embed, progress
        self.ctx = StepContext(embed=embed)

    def run(self, team: str, spec: PipelineSpec, input_ref: str, actor: str | None = None) -> RunResult:
        name, version = parse_ref(input_ref)
        source = self.store.get_version(team, name, version)
        defs = [resolve(s.step, s.version) for s in spec.steps]
        params = [d.parse_params(s.params) for d, s in zip(defs, spec.steps, strict=True)]
        run_id = "run_" + uuid.uuid4().hex[:24]
        out_name = spec.output or f"{source.dataset}-{spec.name}"
        fast = self._all_cached(team, source, out_name, defs, params)
        if fast is not None:  # every step's output is cached and the result is the newest published version
            records, steps = fast
            origin: dict[str, set[str]] = {}
        else:
            records, origin, steps = self._run_steps(team, source, defs, params)
        self._tick("checks", len(defs), len(defs))
        wants_previous = any(c.check in NEEDS_PREVIOUS for c in spec.checks)
        checks = run_checks([(c.check, c.params) for c in spec.checks], records,
                            CheckContext(previous=self._previous(team, out_name) if wants_previous else None))
        status = PUBLISHED if all(c.passed for c in checks) else REJECTED
        if fast is not None and status != PUBLISHED:  # a new (rejected) version needs its record lineage
            records, origin, steps = self._run_steps(team, source, defs, params)
        out, created = self.store.add_version(
            team, out_name, records, source={"kind": "pipeline", "pipeline": spec.name, "input": source.ref},
            parent=source.id, pipeline_run=run_id, status=status, checks=[c.view() for c in checks], actor=actor)
        result = RunResult(run_id, team, spec.name, status, source, out, created, steps, checks)
        self._record(result, spec, origin, actor)
        log.info("pipeline %s on %s: %s %s (%d steps, %d cached)", spec.name, source.ref, status, out.ref,
                 len(steps), sum(s.cached for s in steps))
        return result

    def _run_steps(self, team: str, source: DatasetVersion, defs: list[StepDef], params: list[Strict]
                   ) -> tuple[list[Record], dict[str, set[str]], list[StepRun]]:
        records = list(self.store.iter_records(source))
        origin: dict[str, set[str]] = {r.id: {r.id} for r in records}
        current = source.content_hash
        steps: list[StepRun] = []
        for i, (d, p) in enumerate(zip(defs, params, strict=True)):
            self._tick(f"step {i + 1}/{len(defs)} {d.name}", i, len(defs))
            records, sources, run = self._step(team, i, d, p.model_dump(mode="json"), p, records, current)
            origin = _compose(origin, sources, d.name)
            current = run.output_hash
            steps.append(run)
        return records, origin, steps

    def _all_cached(self, team: str, source: DatasetVersion, out_name: str, defs: list[StepDef],
                    params: list[Strict]) -> tuple[list[Record], list[StepRun]] | None:
        """When every step's key is in the cache (each key follows from the one before by its output hash)
        and the last output is the output dataset's newest published content: the last output alone, read
        once, without reading the input or any intermediate output. Otherwise None."""
        try:
            latest = self.store.get_dataset(team, out_name).latest_hash
        except NotFound:
            return None
        current, count = source.content_hash, source.record_count
        steps: list[StepRun] = []
        row: StepCacheRow | None = None
        with Session(self.store.db) as s:
            for i, (d, p) in enumerate(zip(defs, params, strict=True)):
                params_hash = hashlib.sha256(canonical(p.model_dump(mode="json"))).hexdigest()
                key = _cache_key(team, current, d, params_hash)
                row = s.get(StepCacheRow, key)
                if row is None:
                    return None
                steps.append(StepRun(i, d.name, d.version, params_hash, key, True, count, row.record_count,
                                     row.output_hash, 0.0))
                current, count = row.output_hash, row.record_count
        if row is None or current != latest or not self.store.blobs.exists(row.blob):
            return None
        records = [Record(line["id"], line["hash"], line["data"]) for line in self.store.blobs.read_lines(row.blob)]
        return records, steps

    def _tick(self, what: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(what, done, total)

    def _previous(self, team: str, name: str) -> list[Record] | None:
        try:
            return list(self.store.iter_records(self.store.get_version(team, name)))
        except NotFound:
            return None

    def _step(self, team: str, index: int, d: StepDef, raw_params: dict[str, Any], params: Any,
              records: list[Record], input_hash: str) -> tuple[list[Record], dict[str, list[str]], StepRun]:
        params_hash = hashlib.sha256(canonical(raw_params)).hexdigest()
        key = _cache_key(team, input_hash, d, params_hash)
        started = time.perf_counter()
        hit = self._cached(key)
        if hit is not None:
            out, sources = hit
        else:
            self.ctx.invocations[d.name] = self.ctx.invocations.get(d.name, 0) + 1
            out, sources = _materialise(d.fn(records, params, self.ctx))
            self._store_cache(key, team, d.name, out, sources)
        run = StepRun(index, d.name, d.version, params_hash, key, hit is not None, len(records), len(out),
                      version_hash(out), round(time.perf_counter() - started, 4))
        return out, sources, run

    def _cached(self, key: str) -> tuple[list[Record], dict[str, list[str]]] | None:
        with Session(self.store.db) as s:
            row = s.get(StepCacheRow, key)
        if row is None or not self.store.blobs.exists(row.blob):
            return None
        out: list[Record] = []
        sources: dict[str, list[str]] = {}
        for line in self.store.blobs.read_lines(row.blob):
            out.append(Record(line["id"], line["hash"], line["data"]))
            sources[line["id"]] = line.get("x") or [line["id"]]
        return out, sources

    def _store_cache(self, key: str, team: str, step: str, out: list[Record], sources: dict[str, list[str]]) -> None:
        blob = f"cache/{key[:2]}/{key}.jsonl"
        self.store.blobs.write_records(blob, out, extra=sources)
        with self.store.db.begin() as conn:
            if conn.execute(select(StepCacheRow.key).where(StepCacheRow.key == key)).first() is None:
                conn.execute(insert(StepCacheRow), [{"key": key, "team": team, "step": step,
                                                     "output_hash": version_hash(out), "record_count": len(out),
                                                     "blob": blob, "created_at": datetime.now(UTC)}])

    def _record(self, result: RunResult, spec: PipelineSpec, origin: dict[str, set[str]],
                actor: str | None) -> None:
        """The run row and, for a version it made, the lineage: input version -> run -> output version, each
        step version -> output version, and every output record <- the input records it came from."""
        src, out = result.input, result.output
        edges = [Edge("dataset_version", src.id, "pipeline_run", result.id, spec.name),
                 Edge("pipeline_run", result.id, "dataset_version", out.id, spec.name)]
        if result.created:
            edges += [Edge("step_run", s.node, "dataset_version", out.id, f"step {s.index}") for s in result.steps]
            edges += [Edge("record", record_node(src.id, i), "record", record_node(out.id, o), spec.name)
                      for o, ins in origin.items() for i in sorted(ins)]
        with self.store.db.begin() as conn:
            conn.execute(insert(PipelineRunRow), [{
                "id": result.id, "team": result.team, "pipeline": spec.name, "spec": spec.model_dump(mode="json"),
                "input_version_id": src.id, "output_version_id": out.id, "status": result.status,
                "steps": result.view()["steps"], "error": None, "created_at": datetime.now(UTC),
                "created_by": actor}])
            self.store.lineage.add(edges, team=result.team, conn=conn)


def _cache_key(team: str, input_hash: str, d: StepDef, params_hash: str) -> str:
    return hashlib.sha256(f"{team}\x1f{input_hash}\x1f{d.name}\x1f{d.version}\x1f{params_hash}".encode()).hexdigest()


def _compose(origin: dict[str, set[str]], sources: dict[str, list[str]], step: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for out_id, srcs in sources.items():
        unknown = [s for s in srcs if s not in origin]
        if unknown:
            raise InvalidRequest(f"step {step}: output {out_id!r} names unknown source records {unknown[:3]}")
        out[out_id] = set().union(*(origin[s] for s in srcs))
    return out


def _materialise(outs: Sequence[Out]) -> tuple[list[Record], dict[str, list[str]]]:
    """Records with ids (one source: its id; otherwise the given id, or the content hash), unique."""
    records: list[Record] = []
    sources: dict[str, list[str]] = {}
    for o in outs:
        rec = with_id("", o.data)
        rid = o.id or (o.sources[0] if len(o.sources) >= 1 and o.sources[0] not in sources else rec.content_hash[:16])
        base, k = rid, 1
        while rid in sources:
            k += 1
            rid = f"{base}#{k}"
        records.append(Record(rid, rec.content_hash, o.data))
        sources[rid] = list(o.sources)
    return records, sources


def list_runs(store: DatasetStore, teams: Sequence[str] | None, limit: int = 100) -> list[dict[str, Any]]:
    with Session(store.db) as s:
        q = select(PipelineRunRow).order_by(PipelineRunRow.created_at.desc()).limit(limit)
        if teams is not None:
            q = q.where(PipelineRunRow.team.in_(list(teams)))
        return [_run_view(r) for r in s.scalars(q).all()]


def get_run(store: DatasetStore, team: str | None, run_id: str) -> dict[str, Any]:
    with Session(store.db) as s:
        row = s.get(PipelineRunRow, run_id)
    if row is None or (team is not None and row.team != team):
        raise NotFound(f"no pipeline run {run_id!r}", code="pipeline_run_not_found")
    return _run_view(row)


def _run_view(r: PipelineRunRow) -> dict[str, Any]:
    return {"id": r.id, "team": r.team, "pipeline": r.pipeline, "status": r.status, "spec": r.spec,
            "input_version_id": r.input_version_id, "output_version_id": r.output_version_id, "steps": r.steps,
            "created_at": r.created_at.isoformat(), "created_by": r.created_by}


__all__ = ["PipelineRunner", "PipelineSpec", "RunResult", "StepRun", "get_run", "list_runs", "load_spec"]
