"""Eval cases: from a JSONL file, or from a dataset version (``dataset:NAME@N``, through ``strata.data``).

One case per line/record::

    {"id": "q1", "input": "What is 2+2?", "reference": "4", "number": 4, "facts": ["4"], "tags": ["math"]}

``messages`` (OpenAI chat messages) may replace ``input``; optional fields feed the scorers: ``reference``
(exact, similarity, judge), ``facts`` (contains), ``pattern`` (regex), ``schema`` (json_schema), ``number``
(numeric). A case without an ``id`` gets its line number.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from strata.errors import InvalidRequest

DATASET = "dataset:"


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    messages: list[dict[str, Any]]
    reference: str | None = None
    facts: list[str] = field(default_factory=list)
    pattern: str | None = None
    schema: dict[str, Any] | None = None
    number: float | None = None
    tags: list[str] = field(default_factory=list)

    @property
    def question(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages if m.get("role") == "user")


def case_from(data: dict[str, Any], default_id: str) -> Case:
    if not isinstance(data, dict):
        raise InvalidRequest(f"case {default_id}: a case is a JSON object")
    messages = data.get("messages")
    if messages is None:
        if not isinstance(data.get("input"), str):
            raise InvalidRequest(f"case {data.get('id', default_id)}: needs `input` (text) or `messages`")
        messages = [{"role": "user", "content": data["input"]}]
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(f"case {data.get('id', default_id)}: `messages` must be a non-empty list")
    facts = data.get("facts") or []
    number = data.get("number")
    return Case(id=str(data.get("id") or default_id), messages=messages, reference=data.get("reference"),
                facts=[str(f) for f in facts], pattern=data.get("pattern"), schema=data.get("schema"),
                number=float(number) if number is not None else None, tags=list(data.get("tags") or []))


def load_jsonl(path: Path) -> list[Case]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InvalidRequest(f"cannot read cases from {path}: {exc.strerror}", param="cases") from None
    cases = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            cases.append(case_from(json.loads(line), str(n)))
        except ValueError as exc:
            raise InvalidRequest(f"{path}:{n}: not JSON ({exc})", param="cases") from None
    return _unique(cases, str(path))


def load_dataset(ref: str, db: Any, settings: Any, team: str = "default") -> list[Case]:
    """Cases from a dataset version (the [data] package, when installed in this build)."""
    try:
        from strata.data.blobs import BlobStore
        from strata.data.store import DatasetStore, parse_ref
    except ImportError:
        raise InvalidRequest("dataset cases need the datasets package (strata.data), not in this build",
                             param="cases") from None
    data = getattr(settings, "data", None)
    url = getattr(data, "storage_url", None) or (settings.data_dir.resolve() / "datasets").as_uri()
    store = DatasetStore(db, BlobStore(url))
    name, version = parse_ref(ref.removeprefix(DATASET))
    found = store.get_version(team, name, version)
    cases = [case_from(r.data, r.id) for r in store.iter_records(found)]
    return _unique(cases, f"{found.dataset}@{found.number}")


def _unique(cases: list[Case], where: str) -> list[Case]:
    seen: set[str] = set()
    for c in cases:
        if c.id in seen:
            raise InvalidRequest(f"{where}: case id {c.id!r} appears twice", param="cases")
        seen.add(c.id)
    if not cases:
        raise InvalidRequest(f"{where}: no cases", param="cases")
    return cases


def cases_hash(cases: list[Case]) -> str:
    """What the run was scored on: a resumed run must have the same cases."""
    body = json.dumps([[c.id, c.messages, c.reference, c.facts, c.pattern, c.schema, c.number] for c in cases],
                      sort_keys=True)
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()
