"""The registry's records: register a model version, list and show models, move aliases, approve versions.

Versions are immutable once registered (only their approval changes). An alias names one version; while a
canary rolls a new version out, the alias keeps the old one and holds the new one as ``pending`` (see
``registry.rollout``). Every function here is synchronous and short; the admin API runs them off the loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strata.errors import ConfigError, InvalidRequest, NotFound
from strata.registry.hashing import content_hash
from strata.registry.tables import ModelAlias, ModelVersion, RegisteredModel

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
PREFIX = "registry:"


@dataclass(frozen=True, slots=True)
class NewVersion:
    """What ``register`` records; ``artifact`` is a local path, ``bundled:NAME``, or (for an upstream engine)
    the model name the upstream serves."""

    model: str
    artifact: str
    engine_type: str
    parameters: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    dataset_versions: list[str] = field(default_factory=list)
    tags: dict[str, Any] = field(default_factory=dict)
    description: str | None = None


def parse_ref(ref: str) -> tuple[str, str]:
    """``registry:NAME@ALIAS`` / ``registry:NAME@3`` / ``NAME@ALIAS`` -> (NAME, ALIAS or version number)."""
    body = ref.removeprefix(PREFIX)
    name, sep, pointer = body.partition("@")
    if not sep or not NAME.match(name) or not pointer:
        raise InvalidRequest(f"bad registry reference {ref!r}: use registry:NAME@ALIAS or registry:NAME@VERSION",
                             param="model")
    return name, pointer


def hash_artifact(artifact: str, engine_type: str) -> str | None:
    """The content hash of a local artifact; None for an upstream's model name (nothing local to hash)."""
    if engine_type == "openai":
        return None
    from strata.engines.artifacts import resolve_artifact

    try:
        path = resolve_artifact(artifact, f"registry {artifact}")
    except ConfigError as exc:
        raise InvalidRequest(exc.message, param="artifact") from None
    return content_hash(path)


def _now() -> datetime:
    return datetime.now(UTC)


def _at(value: datetime | None) -> str | None:
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def version_view(v: ModelVersion, aliases: list[str] | None = None) -> dict[str, Any]:
    return {"model": v.model, "version": v.version, "ref": f"{v.model}@{v.version}", "artifact_uri": v.artifact_uri,
            "content_hash": v.content_hash, "engine_type": v.engine_type, "parameters": v.parameters,
            "metrics": v.metrics, "run_id": v.run_id, "dataset_versions": v.dataset_versions, "tags": v.tags,
            "created_at": _at(v.created_at), "created_by": v.created_by, "aliases": aliases or [],
            "approval": {"status": v.approval, "by": v.approved_by, "at": _at(v.approved_at),
                         "note": v.approval_note}}


def alias_view(a: ModelAlias) -> dict[str, Any]:
    return {"model": a.model, "alias": a.alias, "version": a.version, "pending": a.pending,
            "updated_at": _at(a.updated_at), "updated_by": a.updated_by}


class RegistryStore:
    def __init__(self, db: Engine) -> None:
        self.db = db

    def register(self, new: NewVersion, actor: str, content: str | None = None) -> dict[str, Any]:
        """Add the next version of ``new.model`` (creating the model on its first version)."""
        if not NAME.match(new.model):
            raise InvalidRequest(f"bad model name {new.model!r}: letters, digits, '.', '_' and '-'", param="model")
        content = content if content is not None else hash_artifact(new.artifact, new.engine_type)
        for attempt in range(3):  # two registrations racing for the same number: the loser takes the next
            try:
                with Session(self.db, expire_on_commit=False) as s, s.begin():
                    if s.get(RegisteredModel, new.model) is None:
                        s.add(RegisteredModel(name=new.model, description=new.description, created_at=_now(),
                                              created_by=actor))
                        s.flush()
                    number = (s.scalar(select(func.max(ModelVersion.version))
                                       .where(ModelVersion.model == new.model)) or 0) + 1
                    row = ModelVersion(model=new.model, version=number, artifact_uri=new.artifact,
                                       content_hash=content, engine_type=new.engine_type,
                                       parameters=new.parameters, metrics=new.metrics, run_id=new.run_id,
                                       dataset_versions=new.dataset_versions, tags=new.tags, created_at=_now(),
                                       created_by=actor, approval="pending")
                    s.add(row)
                return version_view(row)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def models(self) -> list[dict[str, Any]]:
        with Session(self.db) as s:
            models = list(s.scalars(select(RegisteredModel).order_by(RegisteredModel.name)))
            latest: dict[str, int] = {m: v for m, v in s.execute(
                select(ModelVersion.model, func.max(ModelVersion.version)).group_by(ModelVersion.model))}
            aliases: dict[str, dict[str, int]] = {}
            for a in s.scalars(select(ModelAlias)):
                aliases.setdefault(a.model, {})[a.alias] = a.version
        return [{"name": m.name, "description": m.description, "latest_version": latest.get(m.name),
                 "aliases": aliases.get(m.name, {}), "created_at": _at(m.created_at)} for m in models]

    def show(self, model: str) -> dict[str, Any]:
        with Session(self.db) as s:
            m = s.get(RegisteredModel, model)
            if m is None:
                raise NotFound(f"no registered model {model!r}", param="model", code="model_not_registered")
            aliases = list(s.scalars(select(ModelAlias).where(ModelAlias.model == model)))
            by_version: dict[int, list[str]] = {}
            for a in aliases:
                by_version.setdefault(a.version, []).append(a.alias)
            versions = [version_view(v, sorted(by_version.get(v.version, []))) for v in s.scalars(
                select(ModelVersion).where(ModelVersion.model == model).order_by(ModelVersion.version))]
        return {"name": m.name, "description": m.description, "created_at": _at(m.created_at),
                "aliases": [alias_view(a) for a in aliases], "versions": versions}

    def version(self, model: str, pointer: str) -> dict[str, Any]:
        """The version an alias or a number names; NotFound naming what is missing."""
        with Session(self.db) as s:
            return version_view(self._version(s, model, pointer))

    def _version(self, s: Session, model: str, pointer: str) -> ModelVersion:
        if s.get(RegisteredModel, model) is None:
            raise NotFound(f"no registered model {model!r}", param="model", code="model_not_registered")
        if pointer.isdigit():
            number = int(pointer)
        else:
            alias = s.get(ModelAlias, (model, pointer))
            if alias is None:
                raise NotFound(f"model {model!r} has no alias {pointer!r}", param="model", code="alias_not_found")
            number = alias.version
        row = s.scalar(select(ModelVersion).where(ModelVersion.model == model, ModelVersion.version == number))
        if row is None:
            raise NotFound(f"model {model!r} has no version {number}", param="version", code="version_not_found")
        return row

    def alias(self, model: str, alias: str) -> dict[str, Any] | None:
        with Session(self.db) as s:
            row = s.get(ModelAlias, (model, alias))
            return alias_view(row) if row else None

    def set_alias(self, model: str, alias: str, version: int, actor: str, *, pending: bool = False,
                  require_approval: bool = False) -> dict[str, Any]:
        """Point ``alias`` at ``version`` (or, ``pending``, mark ``version`` as rolling out to it)."""
        if not NAME.match(alias) or alias.isdigit():
            raise InvalidRequest(f"bad alias {alias!r}: a name such as champion (not a number)", param="alias")
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            target = self._version(s, model, str(version))
            if require_approval and target.approval != "approved":
                raise InvalidRequest(f"{model}@{version} is not approved ({target.approval}): "
                                     f"strata models approve {model} {version}", param="version",
                                     code="version_not_approved")
            row = s.get(ModelAlias, (model, alias))
            if row is None:
                if pending:
                    raise InvalidRequest(f"alias {alias!r} of {model!r} does not exist yet", param="alias")
                row = ModelAlias(model=model, alias=alias, version=version, updated_at=_now(), updated_by=actor)
                s.add(row)
            elif pending:
                row.pending, row.updated_at, row.updated_by = version, _now(), actor
            else:
                row.version, row.pending, row.updated_at, row.updated_by = version, None, _now(), actor
        return alias_view(row)

    def clear_pending(self, model: str, alias: str) -> None:
        with Session(self.db) as s, s.begin():
            row = s.get(ModelAlias, (model, alias))
            if row is not None:
                row.pending = None

    def approve(self, model: str, version: int, actor: str, status: str = "approved",
                note: str | None = None) -> dict[str, Any]:
        if status not in ("approved", "rejected", "pending"):
            raise InvalidRequest("status is approved, rejected or pending", param="status")
        with Session(self.db, expire_on_commit=False) as s, s.begin():
            row = self._version(s, model, str(version))
            row.approval, row.approved_by, row.approved_at, row.approval_note = status, actor, _now(), note
        return version_view(row)

    def register_bundled(self, bundled: dict[str, tuple[str, str]]) -> list[str]:
        """Register each bundled model (name -> (artifact, engine type)) once, with alias ``champion``; a model
        whose package is not installed is left out. Returns the names registered now."""
        done = []
        for name, (artifact, engine_type) in bundled.items():
            with Session(self.db) as s:
                if s.get(RegisteredModel, name) is not None:
                    continue
            try:
                content = hash_artifact(artifact, engine_type)
            except InvalidRequest:
                continue  # not installed here: nothing to register
            try:
                self.register(NewVersion(name, artifact, engine_type, tags={"bundled": True},
                                         description=f"bundled model {artifact}"), "strata", content)
            except IntegrityError:
                continue  # another replica registered it first
            self.set_alias(name, "champion", 1, "strata")
            done.append(name)
        return done

# the bundled models registered on the first start: registry name -> (artifact, engine type)
BUNDLED_MODELS = {"smollm2": ("bundled:smollm2", "llamacpp"),
                  "minilm": ("bundled:all-minilm-l6-v2", "sentence-transformers")}
