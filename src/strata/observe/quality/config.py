"""Config models of online quality: a route's ``quality:`` block (sampling, scorers, judge) and the top-level
``quality:`` settings (rubrics of one's own, next to the built-in ones)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from strata.config.base import Strict


class JudgeConfig(Strict):
    """LLM-as-judge: which route judges, with which versioned rubric."""

    route: str = Field(min_length=1, description="Chat route whose model judges (an internal call, role judge)")
    rubric: str = Field("helpfulness", min_length=1, description="Rubric name: built-in (helpfulness@1, "
                        "correctness@1) or one of quality.rubrics")
    rubric_version: str | None = Field(None, description="Rubric version; unset: the newest one of that name")
    max_tokens: int = Field(200, ge=8, le=4096, description="Output limit of the judge's answer")
    answer_chars: int = Field(4000, ge=100, description="Characters of the prompt and of the answer shown to the "
                              "judge (the rest is cut)")


class QualityConfig(Strict):
    """Online quality sampling of one route (off unless the route has a ``quality:`` block)."""

    sample_rate: float = Field(0.05, ge=0, le=1, description="Share of the route's served answers scored")
    max_concurrency: int = Field(4, ge=1, description="Samples being scored at once; beyond, a sample is "
                                 "dropped and counted as skipped_busy")
    scorers: list[str] = Field(default_factory=lambda: ["refusal", "empty", "json"], min_length=1,
                               description="Scorer names: judge, refusal, empty, json, or a plugin's")
    judge: JudgeConfig | None = Field(None, description="The judge scorer's route and rubric")
    timeout: float = Field(60.0, gt=0, description="Seconds one sample's scoring may take before it counts "
                           "as failed")

    @model_validator(mode="after")
    def _judge_configured(self) -> QualityConfig:
        if "judge" in self.scorers and self.judge is None:
            raise ValueError("quality.scorers has judge: set quality.judge.route")
        if len(set(self.scorers)) != len(self.scorers):
            raise ValueError("quality.scorers lists a scorer twice")
        return self


class RubricConfig(Strict):
    """A judge rubric of one's own: a prompt template with a version, and the scale the judge answers on."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    version: str = Field(min_length=1, description="Recorded with every score (scorer_version judge:NAME@VERSION)")
    template: str = Field(min_length=1, description="Judge prompt; {prompt} and {answer} are filled in")
    scale: Literal["1-5", "0-1"] = Field("1-5", description="1-5: mapped to 0..1 as (s-1)/4; 0-1: as given")


class QualitySettings(Strict):
    """Settings of online quality shared by every route (each route samples under its own ``quality:``)."""

    rubrics: list[RubricConfig] = Field(default_factory=list, description="Judge rubrics besides the built-in "
                                        "ones; a name and version pair is unique")
    confidence: float = Field(0.95, ge=0.5, lt=1, description="Level of the confidence intervals in reports")

    @model_validator(mode="after")
    def _unique(self) -> QualitySettings:
        seen = [(r.name, r.version) for r in self.rubrics]
        if len(set(seen)) != len(seen):
            raise ValueError("quality.rubrics: a rubric name and version appears twice")
        return self
