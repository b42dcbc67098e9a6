"""Config of evaluation suites and gates (``evals:`` in strata.yaml; a suite may also be its own YAML file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from strata.config.base import Strict

Stage = Literal["start", "step", "promote"]
STAGES: tuple[Stage, ...] = ("start", "step", "promote")
ScorerType = Literal["exact", "contains", "regex", "json_schema", "numeric", "similarity", "judge", "pairwise"]


class Rubric(Strict):
    """A judge's instructions, versioned: a run records the name and version it was scored with."""

    name: str = "helpfulness"
    version: int = Field(1, ge=1)
    text: str = Field("Rate how well the answer responds to the question: correct, complete and concise.",
                      description="What the judge scores the answer on")
    scale: int = Field(5, ge=2, le=10, description="The judge answers a score from 1 to this")


class ScorerConfig(Strict):
    """One scorer of a suite; each gives every case a score in 0..1 (and pass/fail at ``pass_at``)."""

    type: ScorerType
    name: str | None = Field(None, description="Metric name (default: the type)")
    pattern: str | None = Field(None, description="regex: the pattern (default: each case's `pattern`)")
    ignore_case: bool = True
    tolerance: float = Field(1e-6, ge=0, description="numeric: relative tolerance of the answer")
    route: str | None = Field(None, description="similarity: embeddings route (default minilm); judge/pairwise: "
                              "the judge's chat route")
    rubric: Rubric = Rubric()
    pass_at: float = Field(0.5, ge=0, le=1, description="A case passes this scorer at this score or above")

    @property
    def metric(self) -> str:
        return self.name or self.type

    @model_validator(mode="after")
    def _judge_route(self) -> ScorerConfig:
        if self.type in ("judge", "pairwise") and not self.route:
            raise ValueError(f"scorer {self.metric!r}: a {self.type} scorer needs `route` (the judge's chat route)")
        return self


class SuiteConfig(Strict):
    """A suite: cases (a JSONL file, or a dataset version ``dataset:NAME@N``) and the scorers that grade them."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    cases: str = Field(description="JSONL file of cases (relative to the suite file), or dataset:NAME@VERSION")
    scorers: list[ScorerConfig] = Field(min_length=1)
    system: str | None = Field(None, description="A system message put before every case's messages")
    max_tokens: int = Field(128, ge=1)
    temperature: float = Field(0.0, ge=0)
    concurrency: int = Field(4, ge=1, le=64, description="Cases in flight at once")
    timeout: float = Field(120.0, gt=0, description="Seconds one gateway call may take")
    base_dir: Path | None = Field(None, exclude=True)


class GateConfig(Strict):
    """An eval gate: before a canary starts, steps or is promoted on ``route`` (or on a route following the
    registry alias ``model``), the newest run of ``suite`` against the canary's version must pass."""

    suite: str
    route: str | None = Field(None, description="The route whose rollouts the gate guards")
    model: str | None = Field(None, description="Or a registry alias, NAME@ALIAS, whose moves it guards")
    stages: list[Stage] = Field(default_factory=lambda: list(STAGES))
    thresholds: dict[str, float] = Field(default_factory=dict, description="Metric -> the lowest mean score "
                                         "that passes; `pass_rate`: share of cases passing every scorer")
    not_worse: bool = Field(True, description="Also refuse when a metric is significantly worse than the "
                            "baseline run (the newest run of the suite against what serves now)")
    confidence: float = Field(0.95, ge=0.5, lt=1, description="One-sided confidence of 'significantly worse'")

    @model_validator(mode="after")
    def _one_subject(self) -> GateConfig:
        if (self.route is None) == (self.model is None):
            raise ValueError("a gate names exactly one of `route` or `model` (NAME@ALIAS)")
        if self.model is not None and "@" not in self.model:
            raise ValueError(f"gate model {self.model!r}: use NAME@ALIAS, e.g. support-bot@champion")
        return self


class EvalSettings(Strict):
    """Eval suites (``strata evals run NAME``) and the gates on rollouts."""

    suites: list[SuiteConfig] = Field(default_factory=list)
    gates: list[GateConfig] = Field(default_factory=list)
