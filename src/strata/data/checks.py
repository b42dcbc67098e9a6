"""Quality checks, declared Great Expectations style: a list of ``expect_*: {params}`` entries, each a small
function over the records that names every failing record (id and reason). A failing check blocks publishing:
the version is kept as ``rejected`` with the report.

Why not pandera: its checks run on pandas DataFrames (pandas is not a dependency; ~40 MB and ~0.4 s of
import for every pipeline), and a failure names a row index, which would have to be mapped back to record
ids; record-level checks over dicts are a few lines each, and the names follow GE's vocabulary.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import Field, ValidationError

from strata.config.base import Strict
from strata.data.records import Record
from strata.errors import InvalidRequest

MAX_LISTED = 100  # failing records named per check; the count is always complete


@dataclass(slots=True)
class CheckResult:
    check: str
    passed: bool
    failed_count: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)  # [{"id", "reason"}], the first MAX_LISTED
    detail: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class CheckContext:
    previous: Sequence[Record] | None = None  # the output dataset's newest published version, if any


def _result(name: str, failures: list[tuple[str, str]], **detail: Any) -> CheckResult:
    return CheckResult(name, not failures, len(failures),
                       [{"id": i, "reason": r} for i, r in failures[:MAX_LISTED]], detail)


_TYPES: dict[str, tuple[type, ...]] = {"string": (str,), "integer": (int,), "number": (int, float),
                                       "boolean": (bool,), "list": (list,), "object": (dict,)}
TypeName = Literal["string", "integer", "number", "boolean", "list", "object"]


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


class SchemaParams(Strict):
    fields: dict[str, TypeName] = Field(description="Required field -> type")
    allow_extra: bool = True


def expect_record_schema(records: Sequence[Record], p: SchemaParams, ctx: CheckContext) -> CheckResult:
    fails = []
    for r in records:
        for name, kind in p.fields.items():
            if name not in r.data:
                fails.append((r.id, f"missing field {name!r}"))
                break
            if r.data[name] is not None and not _is(r.data[name], kind):
                fails.append((r.id, f"{name} is {type(r.data[name]).__name__}, not {kind}"))
                break
        else:
            extra = set(r.data) - set(p.fields)
            if extra and not p.allow_extra:
                fails.append((r.id, f"unexpected fields {', '.join(sorted(extra))}"))
    return _result("expect_record_schema", fails)


class ColumnParams(Strict):
    column: str


def expect_column_values_to_not_be_null(records: Sequence[Record], p: ColumnParams, ctx: CheckContext) -> CheckResult:
    fails = [(r.id, f"{p.column} is {'missing' if p.column not in r.data else 'null or empty'}") for r in records
             if r.data.get(p.column) is None or r.data.get(p.column) == ""]
    return _result("expect_column_values_to_not_be_null", fails, column=p.column)


class UniqueParams(Strict):
    column: str | None = Field(None, description="The field that must be unique (None: the whole record)")


def expect_column_values_to_be_unique(records: Sequence[Record], p: UniqueParams, ctx: CheckContext) -> CheckResult:
    first: dict[str, str] = {}
    fails = []
    for r in records:
        key = r.content_hash if p.column is None else repr(r.data.get(p.column))
        if key in first:
            fails.append((r.id, f"duplicate of {first[key]}" + (f" ({p.column})" if p.column else "")))
        else:
            first[key] = r.id
    return _result("expect_column_values_to_be_unique", fails, column=p.column)


class BetweenParams(Strict):
    column: str
    min_value: float | None = None
    max_value: float | None = None


def expect_column_values_to_be_between(records: Sequence[Record], p: BetweenParams, ctx: CheckContext) -> CheckResult:
    fails = []
    for r in records:
        raw = r.data.get(p.column)
        try:
            value = float(raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            fails.append((r.id, f"{p.column}={raw!r} is not a number"))
            continue
        if (p.min_value is not None and value < p.min_value) or (p.max_value is not None and value > p.max_value):
            fails.append((r.id, f"{p.column}={raw!r} outside [{p.min_value}, {p.max_value}]"))
    return _result("expect_column_values_to_be_between", fails, column=p.column)


class BalanceParams(Strict):
    column: str = "label"
    min_share: float = Field(0.1, gt=0, lt=1, description="Each label's least share of the records")
    labels: list[str] | None = Field(None, description="Labels that must be present (absent: share 0)")


def expect_label_balance(records: Sequence[Record], p: BalanceParams, ctx: CheckContext) -> CheckResult:
    """Under-represented labels fail, and so do their records (they are what the gap is made of)."""
    counts = Counter(str(r.data.get(p.column)) for r in records)
    for name in p.labels or ():
        counts.setdefault(name, 0)
    total = max(1, len(records))
    shares = {k: round(v / total, 4) for k, v in counts.items()}
    low = {k for k, s in shares.items() if s < p.min_share}
    fails = [(r.id, f"{p.column}={r.data.get(p.column)!r} has share {shares[str(r.data.get(p.column))]} < "
                    f"{p.min_share}") for r in records if str(r.data.get(p.column)) in low]
    missing = sorted(k for k in low if counts[k] == 0)
    return CheckResult("expect_label_balance", not low, len(fails) + len(missing),
                       [{"id": i, "reason": why} for i, why in fails[:MAX_LISTED]],
                       {"shares": shares, "below": sorted(low), "missing": missing})


class PiiParams(Strict):
    columns: list[str] = Field(default_factory=lambda: ["text"])
    kinds: list[str] | None = Field(None, description="PII kinds (guard.pii names: email, phone, card, …); "
                                    "None: all, and secrets too")


def expect_no_pii(records: Sequence[Record], p: PiiParams, ctx: CheckContext) -> CheckResult:
    """The gateway's own PII and secrets detectors (``strata.guard.pii``)."""
    from strata.guard.pii import PII_KINDS, SECRET_KINDS, find

    pool = {**PII_KINDS, **({} if p.kinds else SECRET_KINDS)}
    unknown = set(p.kinds or ()) - set(PII_KINDS)
    if unknown:
        raise InvalidRequest(f"expect_no_pii: unknown kinds {sorted(unknown)}; known: {', '.join(PII_KINDS)}",
                             param="checks")
    kinds = [pool[k] for k in (p.kinds or pool)]
    fails = []
    for r in records:
        found = sorted({f.detector for c in p.columns if isinstance(r.data.get(c), str)
                        for f in find(r.data[c], kinds)})
        if found:
            fails.append((r.id, "found " + ", ".join(found)))
    return _result("expect_no_pii", fails)


class ShiftParams(Strict):
    column: str = "embedding"
    max_mmd: float = Field(0.05, gt=0, description="Largest squared MMD (RBF kernel) to the previous version")
    sample: int = Field(500, ge=10, description="Records sampled from each version")


def expect_embedding_shift_below(records: Sequence[Record], p: ShiftParams, ctx: CheckContext) -> CheckResult:
    """Squared MMD (RBF kernel, median-distance bandwidth) between this version's and the previous version's
    embeddings; no previous version passes. Fails as a whole (no single record is the shift)."""
    from strata.data.shift import mmd2, vectors

    if not ctx.previous:
        return CheckResult("expect_embedding_shift_below", True, detail={"previous": None})
    a, b = vectors(records, p.column, p.sample), vectors(ctx.previous, p.column, p.sample)
    if len(a) == 0 or len(b) == 0:
        return _result("expect_embedding_shift_below", [("*", f"no {p.column} vectors to compare")])
    score = mmd2(a, b)
    detail = {"mmd2": round(score, 6), "max_mmd": p.max_mmd, "n": len(a), "n_previous": len(b)}
    if score <= p.max_mmd:
        return CheckResult("expect_embedding_shift_below", True, detail=detail)
    return CheckResult("expect_embedding_shift_below", False, 1,
                       [{"id": "*", "reason": f"embedding shift MMD²={score:.4f} > {p.max_mmd}"}], detail)


CheckFn = Callable[[Sequence[Record], Any, CheckContext], CheckResult]
CHECKS: dict[str, tuple[CheckFn, type[Strict]]] = {
    "expect_record_schema": (expect_record_schema, SchemaParams),
    "expect_column_values_to_not_be_null": (expect_column_values_to_not_be_null, ColumnParams),
    "expect_column_values_to_be_unique": (expect_column_values_to_be_unique, UniqueParams),
    "expect_column_values_to_be_between": (expect_column_values_to_be_between, BetweenParams),
    "expect_label_balance": (expect_label_balance, BalanceParams),
    "expect_no_pii": (expect_no_pii, PiiParams),
    "expect_embedding_shift_below": (expect_embedding_shift_below, ShiftParams),
}


def parse_check(name: str, raw: dict[str, Any]) -> tuple[CheckFn, Strict]:
    if name not in CHECKS:
        raise InvalidRequest(f"unknown check {name!r}; known: {', '.join(CHECKS)}", param="checks")
    fn, model = CHECKS[name]
    try:
        return fn, model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidRequest(f"check {name}: {where}: {err['msg']}", param="checks") from None


def run_checks(specs: Sequence[tuple[str, dict[str, Any]]], records: Sequence[Record],
               ctx: CheckContext) -> list[CheckResult]:
    parsed = [parse_check(name, raw) for name, raw in specs]
    return [fn(records, params, ctx) for fn, params in parsed]
