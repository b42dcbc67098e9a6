"""The scorer protocol, the registry of scorers by name, and the built-in heuristic scorers.

A scorer is small: a ``name``, a ``version`` (recorded with each score, so a changed scorer's scores are not
mixed up with the old one's) and ``async score(sample) -> Score | None`` (None: it does not apply to this
sample, e.g. ``json`` when no JSON was asked for). Scores are in 0..1, higher is better.

The registry maps a name to a factory ``(ScorerContext) -> Scorer``: built-ins here and in ``judge``, and any
installed package's under the entry-point group ``strata.quality_scorers`` (the seam the evals package plugs
its scorers into: ``[project.entry-points."strata.quality_scorers"] my_scorer = "pkg.module:factory"``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from strata.errors import ConfigError
from strata.guard.output import REFUSALS, json_problem
from strata.observe.quality.config import QualityConfig, RubricConfig
from strata.plugins import discover

ENTRY_POINTS = "strata.quality_scorers"


@dataclass(slots=True)
class Sample:
    """One served answer picked for scoring, with what a scorer may look at."""

    request_id: str
    route: str
    deployment: str | None
    answer: str
    prompt: str  # the last user message (chat) or the prompt (completions)
    messages: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    response_format: Any = None
    role: str | None = None  # of the deployment that answered: primary, canary, fallback
    trace_id: str | None = None
    team: str | None = None
    key_id: str | None = None


@dataclass(slots=True, frozen=True)
class Score:
    value: float  # 0..1, higher is better
    label: str
    rationale: str | None = None


class Scorer(Protocol):
    name: str
    version: str

    async def score(self, sample: Sample) -> Score | None: ...


# judge(body, sample) -> the judge route's chat completion (an internal call of role ``judge``)
JudgeCall = Callable[[dict[str, Any], Sample], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class ScorerContext:
    """What a scorer factory is given: the route's quality config, the configured rubrics, the judge call."""

    config: QualityConfig
    rubrics: list[RubricConfig] = field(default_factory=list)
    judge: JudgeCall | None = None


Factory = Callable[[ScorerContext], Scorer]


class RefusalScorer:
    """0 when the answer opens with a refusal (the output guard's English patterns), else 1."""

    name, version = "refusal", "1"

    def __init__(self) -> None:
        self.pattern = re.compile("|".join(REFUSALS), re.IGNORECASE)

    async def score(self, sample: Sample) -> Score | None:
        if not sample.answer.strip():
            return None  # the empty scorer's case
        if self.pattern.search(sample.answer[:300]):
            return Score(0.0, "refusal", "the answer refuses")
        return Score(1.0, "answered")


class EmptyScorer:
    """0 for an empty answer or one cut by the output limit (finish_reason length), else 1. A tool call
    (finish_reason tool_calls) with no text is an answer, not an empty one: not scored."""

    name, version = "empty", "1"

    async def score(self, sample: Sample) -> Score | None:
        if sample.finish_reason == "tool_calls" and not sample.answer.strip():
            return None
        if not sample.answer.strip():
            return Score(0.0, "empty", "the answer is empty")
        if sample.finish_reason == "length":
            return Score(0.0, "truncated", "the answer hit the output limit (finish_reason length)")
        return Score(1.0, "complete")


class JsonScorer:
    """Where the request asked for JSON (``response_format``): 1 when the answer is that JSON (and matches the
    schema given), else 0 with the reason. Other requests: not scored."""

    name, version = "json", "1"

    async def score(self, sample: Sample) -> Score | None:
        fmt = sample.response_format
        if not isinstance(fmt, dict) or fmt.get("type") not in ("json_object", "json_schema"):
            return None
        problem = json_problem(sample.answer, fmt, None)
        return Score(1.0, "valid") if problem is None else Score(0.0, "invalid", problem)


def _judge(ctx: ScorerContext) -> Scorer:
    from strata.observe.quality.judge import JudgeScorer  # the rubric templates load only when judging

    return JudgeScorer.of(ctx)


BUILTIN: dict[str, Factory] = {
    "refusal": lambda ctx: RefusalScorer(),
    "empty": lambda ctx: EmptyScorer(),
    "json": lambda ctx: JsonScorer(),
    "judge": _judge,
}


class Registry:
    """Scorer factories by name: the built-ins, then installed plugins (``strata.quality_scorers``)."""

    def __init__(self, extra: dict[str, Factory] | None = None) -> None:
        self.factories: dict[str, Factory] = {**BUILTIN, **(extra or {})}
        self._plugins = discover(ENTRY_POINTS, self.factories, "quality scorer")

    def names(self) -> list[str]:
        return sorted({*self.factories, *self._plugins})

    def build(self, name: str, ctx: ScorerContext) -> Scorer:
        factory = self.factories.get(name)
        if factory is None and name in self._plugins:
            factory = self.factories[name] = self._plugins[name].load()
        if factory is None:
            raise ConfigError(f"unknown quality scorer {name!r} (known: {', '.join(self.names())})")
        return factory(ctx)

    def check(self, route: str, cfg: QualityConfig) -> None:
        """Refuse a route's quality config naming a scorer nobody provides (at startup, not at the first sample)."""
        for name in cfg.scorers:
            if name not in self.factories and name not in self._plugins:
                raise ConfigError(f"route {route!r}: unknown quality scorer {name!r} (known: "
                                  f"{', '.join(self.names())})")
