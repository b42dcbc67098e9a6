"""Scorers: each gives a case's answer a score in 0..1 and says why.

Deterministic ones (exact, contains, regex, json_schema, numeric) are pure functions; ``similarity`` embeds
through an embeddings route, ``judge`` and ``pairwise`` ask a chat route (``evals.judge``), all through the
gateway. A scorer that cannot score (no reference for it) gives ``None`` and the case is not counted for it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from strata.evals.cases import Case
from strata.evals.config import ScorerConfig

if TYPE_CHECKING:
    from strata.evals.client import Gateway

NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?")


@dataclass(frozen=True, slots=True)
class Score:
    value: float | None  # None: this scorer does not apply to the case
    detail: str = ""


def exact(cfg: ScorerConfig, case: Case, output: str) -> Score:
    if case.reference is None:
        return Score(None, "no reference")
    a, b = output.strip(), case.reference.strip()
    if cfg.ignore_case:
        a, b = a.lower(), b.lower()
    return Score(float(a == b), "" if a == b else f"expected {case.reference!r}")


def contains(cfg: ScorerConfig, case: Case, output: str) -> Score:
    facts = case.facts or ([case.reference] if case.reference else [])
    if not facts:
        return Score(None, "no facts or reference")
    text = output.lower() if cfg.ignore_case else output
    missing = [f for f in facts if (f.lower() if cfg.ignore_case else f) not in text]
    return Score((len(facts) - len(missing)) / len(facts), f"missing: {', '.join(missing)}" if missing else "")


def regex(cfg: ScorerConfig, case: Case, output: str) -> Score:
    pattern = cfg.pattern or case.pattern
    if not pattern:
        return Score(None, "no pattern")
    found = re.search(pattern, output, re.IGNORECASE if cfg.ignore_case else 0)
    return Score(float(found is not None), "" if found else f"no match for /{pattern}/")


def json_schema(cfg: ScorerConfig, case: Case, output: str) -> Score:
    if case.schema is None:
        return Score(None, "no schema")
    import jsonschema

    text = output.strip().removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        value = json.loads(text)
    except ValueError:
        return Score(0.0, "not JSON")
    try:
        jsonschema.validate(value, case.schema)
    except jsonschema.ValidationError as exc:
        return Score(0.0, f"schema: {exc.message}")
    return Score(1.0)


def numeric(cfg: ScorerConfig, case: Case, output: str) -> Score:
    expected = case.number
    if expected is None and case.reference is not None and (m := NUMBER.search(case.reference)):
        expected = float(m.group().replace(",", "."))
    if expected is None:
        return Score(None, "no expected number")
    found = NUMBER.findall(output)
    if not found:
        return Score(0.0, "no number in the answer")
    got = float(found[-1].replace(",", "."))  # the final answer comes last
    ok = math.isclose(got, expected, rel_tol=cfg.tolerance, abs_tol=cfg.tolerance)
    return Score(float(ok), "" if ok else f"answered {got:g}, expected {expected:g}")


PURE = {"exact": exact, "contains": contains, "regex": regex, "json_schema": json_schema, "numeric": numeric}


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


async def similarity(cfg: ScorerConfig, case: Case, output: str, gateway: Gateway, request_id: str) -> Score:
    if case.reference is None:
        return Score(None, "no reference")
    a, b = await gateway.embed(cfg.route or "minilm", [output, case.reference], request_id)
    value = max(0.0, cosine(a, b))
    return Score(round(value, 6), f"cosine {value:.3f}")
