"""LLM-as-judge: a versioned rubric (a prompt template), sent to a configured chat route as an internal call
(role ``judge``: its own ledger row under the judged request's id, and a span), and the judge's answer parsed
into a score.

The judge is asked for JSON (``{"score": N, "rationale": "..."}``); a plain ``Score: N`` line is read too, as
small models often answer so. A score outside the rubric's scale, or no score at all, fails the sample
(counted as ``failed``) rather than being guessed.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from strata.errors import ConfigError, UpstreamError
from strata.observe.quality.config import JudgeConfig, RubricConfig
from strata.observe.quality.scorers import JudgeCall, Sample, Score, ScorerContext

_ASK = ('Answer with JSON only: {{"score": <{scale}>, "rationale": "<one sentence>"}}.\n\n'
        "Question:\n{{prompt}}\n\nAnswer:\n{{answer}}\n")
BUILTIN_RUBRICS = [
    RubricConfig(name="helpfulness", version="1", scale="1-5", template=(
        "You grade an AI assistant's answer to a user's question. Score 1 (useless, wrong or a refusal of a "
        "harmless request) to 5 (correct, complete and to the point).\n" + _ASK.format(scale="1-5"))),
    RubricConfig(name="correctness", version="1", scale="0-1", template=(
        "You check an AI assistant's answer. Score 1 if it answers the question correctly, 0 if it is wrong, "
        "off topic or does not answer.\n" + _ASK.format(scale="0 or 1"))),
]
_JSON = re.compile(r"\{[^{}]*\}", re.DOTALL)
_LINE = re.compile(r"score\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.IGNORECASE)


class JudgeFailed(UpstreamError):
    """The judge answered, but not with a score on the rubric's scale."""

    code = "judge_no_score"


def find_rubric(rubrics: list[RubricConfig], name: str, version: str | None) -> RubricConfig:
    """The rubric of that name (and version; else the newest, by version compared as numbers when it can)."""
    found = [r for r in [*BUILTIN_RUBRICS, *rubrics] if r.name == name and (version is None or r.version == version)]
    if not found:
        known = sorted({f"{r.name}@{r.version}" for r in [*BUILTIN_RUBRICS, *rubrics]})
        want = name if version is None else f"{name}@{version}"
        raise ConfigError(f"unknown judge rubric {want!r} (known: {', '.join(known)})")
    return max(found, key=lambda r: _version_key(r.version))


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    return tuple((int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-]", version))


def parse(text: str, scale: str) -> tuple[float, str | None]:
    """(score in 0..1, rationale) from the judge's answer; ``JudgeFailed`` when it holds no score on the scale."""
    raw: float | None = None
    rationale: str | None = None
    for block in _JSON.findall(text):
        try:
            obj = orjson.loads(block)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("score"), int | float) and not isinstance(obj["score"], bool):
            raw, rationale = float(obj["score"]), str(obj.get("rationale") or "") or None
            break
    if raw is None and (m := _LINE.search(text)) is not None:
        raw, rationale = float(m.group(1)), text.strip()[:500] or None
    if raw is None:
        raise JudgeFailed(f"the judge gave no score: {text.strip()[:200]!r}")
    low, high = (1.0, 5.0) if scale == "1-5" else (0.0, 1.0)
    if not low <= raw <= high:
        raise JudgeFailed(f"the judge's score {raw:g} is outside the rubric's scale {scale}")
    return (raw - low) / (high - low), rationale


class JudgeScorer:
    name = "judge"

    def __init__(self, cfg: JudgeConfig, rubric: RubricConfig, call: JudgeCall) -> None:
        self.cfg, self.rubric, self.call = cfg, rubric, call
        self.version = f"{rubric.name}@{rubric.version}"

    @classmethod
    def of(cls, ctx: ScorerContext) -> JudgeScorer:
        if ctx.config.judge is None or ctx.judge is None:
            raise ConfigError("the judge scorer needs quality.judge (a route)")
        rubric = find_rubric(ctx.rubrics, ctx.config.judge.rubric, ctx.config.judge.rubric_version)
        return cls(ctx.config.judge, rubric, ctx.judge)

    def body(self, sample: Sample) -> dict[str, Any]:
        n = self.cfg.answer_chars
        prompt = self.rubric.template.replace("{prompt}", sample.prompt[:n]).replace("{answer}", sample.answer[:n])
        return {"model": "", "temperature": 0, "max_tokens": self.cfg.max_tokens,
                "messages": [{"role": "user", "content": prompt}]}

    async def score(self, sample: Sample) -> Score | None:
        if not sample.answer.strip() and sample.finish_reason == "tool_calls":
            return None  # a tool call: no text for the rubric to grade
        result = await self.call(self.body(sample), sample)
        choices = result.get("choices") or [{}]
        text = str((choices[0].get("message") or {}).get("content") or "")
        value, rationale = parse(text, self.rubric.scale)
        label = "pass" if value >= 0.5 else "fail"
        return Score(round(value, 4), label, rationale)
