"""Prompt-injection and jailbreak detector: a logistic regression on MiniLM embeddings plus transparent rules.

Each text gets three numbers, all 0..1:

- ``classifier``: ``sigmoid(w · v + b)``, where ``v`` is the unit-length all-MiniLM-L6-v2 embedding of the text
  and ``w``, ``b`` come from ``injection_model.json`` (written by ``python -m strata.guard.train_injection``).
  The embedding comes through ``ctx.embed`` (the gateway's own embeddings route, with its ledger row), so this
  module loads no model; its own work is one dot product per window. MiniLM reads 256 tokens, so a text longer
  than ``window_chars`` is cut into overlapping windows (at most ``max_windows``, spread over the text) and the
  highest window counts: an instruction hidden at the end of a retrieved page is still read.
- ``heuristics``: the noisy-OR of hand-weighted regular expressions (see :mod:`strata.guard.injection_rules`).
- ``combined``: the noisy-OR of the two, ``1 - (1 - classifier) * (1 - heuristics)``: either kind of evidence
  is enough, and when no rule fires it is the classifier's score.

A ``Finding`` (detector ``injection``, whole text) is reported when the score of the chosen ``mode`` is above
``threshold``; by default that is the threshold the training job calibrated for a 1% false-positive rate on a
held-out calibration split, stored with the weights (``threshold_fpr: 0.05`` picks the 5% one).

Heavier detectors plug in beside this one (a ``Detector`` registered under another name); ``model_path`` (an
ONNX/transformers classifier) and ``judge_route`` (an LLM judge) are reserved here and refused with a clear
error when the config loads, because this build does not implement them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from strata.errors import ConfigError
from strata.guard.base import Finding, GuardContext, GuardSpec
from strata.guard.injection_rules import heuristic_score

Mode = Literal["combined", "classifier", "heuristics"]


class InjectionOptions(BaseModel):
    """The ``injection`` detector's options, as a guard rule gives them."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "combined"
    threshold: float | None = Field(default=None, ge=0.0, le=1.0,
                                    description="score above which a text is reported; default: the calibrated one")
    threshold_fpr: float = Field(default=0.01, description="which calibrated threshold: 0.01 or 0.05")
    weights: str | None = Field(default=None, description="a retrained injection_model.json; default: the bundled")
    window_chars: int = Field(default=1200, ge=200)
    max_windows: int = Field(default=8, ge=1)
    model_path: str | None = Field(default=None, description="reserved: an ONNX/transformers classifier")
    judge_route: str | None = Field(default=None, description="reserved: an LLM judge route")

    @field_validator("model_path", "judge_route")
    @classmethod
    def _not_available(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            what = "an ONNX/transformers classifier" if info.field_name == "model_path" else "an LLM judge"
            raise ValueError(f"{info.field_name} ({what}) is not available in this build; use the built-in "
                             "embedding classifier (leave it unset) or register a Detector plugin")
        return value


@dataclass(frozen=True, slots=True)
class InjectionModel:
    """The shipped logistic regression and its calibrated thresholds (``thresholds[mode]["fpr_0.01"]``)."""

    weights: np.ndarray
    bias: float
    thresholds: dict[str, dict[str, float]]
    meta: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path | None = None) -> InjectionModel:
        if path is None:
            raw = resources.files("strata.guard").joinpath("injection_model.json").read_text()
        else:
            try:
                raw = Path(path).expanduser().read_text()
            except OSError as exc:
                raise ConfigError(f"injection detector: cannot read weights {path}: {exc}") from exc
        return cls.from_dict(json.loads(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InjectionModel:
        weights = np.asarray(data["weights"], dtype=np.float64)
        meta = {k: v for k, v in data.items() if k not in ("weights", "bias", "thresholds")}
        return cls(weights, float(data["bias"]), data.get("thresholds", {}), meta)

    def classify(self, vectors: np.ndarray) -> np.ndarray:
        """P(injection) for each row of ``vectors`` (normalised to unit length first, like in training)."""
        if vectors.ndim != 2 or vectors.shape[1] != self.weights.shape[0]:
            raise ConfigError(f"injection detector: embeddings have shape {vectors.shape}, the classifier expects "
                              f"{self.weights.shape[0]} dimensions (all-MiniLM-L6-v2); point it at that route")
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return 1.0 / (1.0 + np.exp(-(unit @ self.weights + self.bias)))


@dataclass(frozen=True, slots=True)
class InjectionScore:
    classifier: float
    heuristics: float

    @property
    def combined(self) -> float:
        return combine(self.classifier, self.heuristics)

    def of(self, mode: Mode) -> float:
        return {"combined": self.combined, "classifier": self.classifier, "heuristics": self.heuristics}[mode]


def combine(classifier: float, heuristics: float) -> float:
    return 1.0 - (1.0 - classifier) * (1.0 - heuristics)


def windows(text: str, size: int, most: int) -> list[str]:
    """``text`` itself, or overlapping ``size``-character windows (a quarter overlap), at most ``most``, spread
    evenly from the first to the last so both ends are always read."""
    if len(text) <= size:
        return [text]
    step = size * 3 // 4
    starts = list(range(0, len(text) - size, step)) + [len(text) - size]
    if len(starts) > most:
        starts = [starts[round(i)] for i in np.linspace(0, len(starts) - 1, most)]
    return [text[s:s + size] for s in starts]


class InjectionDetector:
    """The built-in ``injection`` detector; options as in :class:`InjectionOptions`."""

    name = "injection"

    def __init__(self, options: InjectionOptions | None = None, *, model: InjectionModel | None = None,
                 **kwargs: Any) -> None:
        self.options = opts = options or InjectionOptions(**kwargs)
        self.model = model or InjectionModel.load(opts.weights)
        if opts.threshold is not None:
            self.threshold = opts.threshold
        else:
            key = f"fpr_{opts.threshold_fpr}"
            try:
                self.threshold = float(self.model.thresholds[opts.mode][key])
            except KeyError:
                raise ConfigError(f"injection detector: the weights carry no {key} threshold for mode "
                                  f"{opts.mode!r}; set threshold") from None

    async def scores(self, texts: Sequence[str], ctx: GuardContext) -> list[InjectionScore]:
        """The classifier's and the heuristics' score for each text (the classifier's is 0 in mode heuristics)."""
        heuristics = [heuristic_score(t) for t in texts]
        classifier = [0.0] * len(texts)
        if self.options.mode != "heuristics":
            classifier = await self._classify(texts, ctx)
        return [InjectionScore(c, h) for c, h in zip(classifier, heuristics, strict=True)]

    async def scan(self, texts: Sequence[str], ctx: GuardContext) -> list[list[Finding]]:
        out: list[list[Finding]] = []
        for s in await self.scores(texts, ctx):
            value = s.of(self.options.mode)
            out.append([Finding(self.name, round(value, 4))] if value > self.threshold else [])
        return out

    async def _classify(self, texts: Sequence[str], ctx: GuardContext) -> list[float]:
        if ctx.embed is None:
            raise ConfigError(f"injection detector (mode {self.options.mode}) needs embeddings: give the guard an "
                              "embeddings route serving all-MiniLM-L6-v2, or use mode: heuristics")
        owner: list[int] = []
        pieces: list[str] = []
        for i, text in enumerate(texts):
            if text.strip():
                parts = windows(text, self.options.window_chars, self.options.max_windows)
                pieces += parts
                owner += [i] * len(parts)
        best = [0.0] * len(texts)
        if pieces:
            probs = self.model.classify(np.asarray(await ctx.embed(pieces), dtype=np.float64))
            for i, p in zip(owner, probs.tolist(), strict=True):
                best[i] = max(best[i], p)
        return [p if math.isfinite(p) else 1.0 for p in best]


def _build(options: object) -> InjectionDetector:
    assert isinstance(options, InjectionOptions)
    return InjectionDetector(options)


SPEC = GuardSpec(options=InjectionOptions, build=_build)
