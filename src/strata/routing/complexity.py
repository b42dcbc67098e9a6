"""Complexity routing: score a request's difficulty 0..1 and pick the cheap or the strong tier.

``Scorer`` is the small protocol a learned router can implement later. ``TransparentScorer`` is a
weighted mean of three features a person can check by hand, each 0..1:

- ``length``: prompt characters over ``long_prompt_chars`` (capped at 1);
- ``structure``: signals of a demanding request (code, lists, several questions, reasoning or
  constructive verbs, arithmetic, a long conversation), a third per signal, capped at 1;
- ``knn``: similarity-weighted share of "hard" labels among the ``k`` labelled examples nearest to the
  prompt by embedding (the bundled MiniLM through an embeddings route). Left out when no examples or
  no embeddings are available, and the weights of the other features renormalise.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from strata.errors import ConfigError
from strata.routing.config import ComplexityConfig, LabelledExample

log = logging.getLogger(__name__)
Embed = Callable[..., Awaitable[list[list[float]]]]  # (texts) or (texts, parent): the request that needs them

REASONING = re.compile(
    r"\b(explain|why|prove|derive|analy[sz]e|compare|contrast|evaluate|design|implement|refactor|debug|"
    r"optimi[sz]e|step[- ]by[- ]step|reason|justify|trade-?offs?|algorithm|calculate|solve|translate|"
    r"summari[sz]e|write (a|an|the) (function|program|essay|story|poem|script|class|query))\b", re.I)
CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|[{};]\s*$|\bSELECT\b|#include", re.M)
LIST = re.compile(r"^\s*(\d+[.)]|[-*•])\s+", re.M)
ARITH = re.compile(r"\d+\s*[-+*/^×÷]\s*\d+|\d+\s*%|\bsquare root\b|\bintegral\b|\bequation\b", re.I)


@dataclass(slots=True)
class Score:
    value: float
    tier: str
    features: dict[str, float] = field(default_factory=dict)


class Scorer(Protocol):
    async def score(self, body: dict[str, Any], parent: Any = None) -> Score: ...


def prompt_text(body: dict[str, Any]) -> tuple[str, int]:
    """The text a request asks about (user and system turns) and its number of turns."""
    if "messages" in body:
        parts = []
        for m in body["messages"]:
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            if m.get("role") in ("user", "system") and content:
                parts.append(str(content))
        return "\n".join(parts), len(body["messages"])
    prompt = body.get("prompt")
    return (prompt if isinstance(prompt, str) else json.dumps(prompt)), 1


def load_examples(cfg: ComplexityConfig) -> list[LabelledExample]:
    examples = list(cfg.examples)
    if cfg.examples_file is not None:
        path = Path(cfg.examples_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
            examples += [LabelledExample.model_validate_json(line) for line in lines if line.strip()]
        except OSError as exc:
            raise ConfigError(f"complexity.examples_file: cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"complexity.examples_file {path}: each line must be "
                              f'{{"text": ..., "hard": true|false}}: {str(exc).splitlines()[0]}') from None
    return examples


class TransparentScorer:
    def __init__(self, cfg: ComplexityConfig, embed: Embed | None = None) -> None:
        self.cfg = cfg
        self.embed = embed
        self.examples = load_examples(cfg)
        self._vectors: list[list[float]] | None = None

    async def score(self, body: dict[str, Any], parent: Any = None) -> Score:
        """``parent``: the request being scored, passed on to the embeddings it needs (their ledger rows)."""
        text, turns = prompt_text(body)
        cfg = self.cfg
        features = {"length": min(1.0, len(text) / cfg.long_prompt_chars),
                    "structure": structure(text, turns)}
        weights = {"length": cfg.length_weight, "structure": cfg.structure_weight}
        knn = await self._knn(text, parent)
        if knn is not None:
            features["knn"] = knn
            weights["knn"] = cfg.knn_weight
        total = sum(weights.values())
        value = sum(features[k] * w for k, w in weights.items()) / total if total else 0.0
        value = round(value, 4)
        return Score(value, "strong" if value >= cfg.threshold else "cheap", features)

    async def _knn(self, text: str, parent: Any) -> float | None:
        embed = self.embed
        if not self.examples or embed is None or self.cfg.knn_weight == 0:
            return None
        args = () if parent is None else (parent,)
        try:
            if self._vectors is None:
                self._vectors = [_unit(v) for v in await embed([e.text for e in self.examples], *args)]
            query = _unit((await embed([text[:2000]], *args))[0])
        except Exception as exc:  # no embeddings right now: score on the other features
            log.warning("complexity scorer: embeddings unavailable (%s); scoring without nearest neighbours", exc)
            return None
        sims = sorted(((sum(a * b for a, b in zip(query, v, strict=True)), e.hard)
                       for v, e in zip(self._vectors, self.examples, strict=True)), reverse=True)[:self.cfg.k]
        weight = sum(max(s, 0.0) for s, _ in sims)
        if weight == 0:
            return None
        return sum(max(s, 0.0) for s, hard in sims if hard) / weight


def structure(text: str, turns: int) -> float:
    signals = [
        bool(CODE.search(text)),
        len(LIST.findall(text)) >= 2,
        text.count("?") >= 2,
        len(REASONING.findall(text)) >= 1,
        len(REASONING.findall(text)) >= 3,
        bool(ARITH.search(text)),
        turns >= 6,
    ]
    return min(1.0, sum(signals) / 3)


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]
