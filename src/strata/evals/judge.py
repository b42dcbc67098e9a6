"""LLM-as-judge through any Strata route, with a versioned rubric.

``judge``: the judge answers ``{"score": N, "rationale": "..."}`` for N in 1..scale; the score is normalised
to 0..1 and the rationale kept. ``pairwise``: the judge sees the candidate's and the baseline's answers twice,
in both orders (a judge that always prefers the first answer cancels out), and answers ``{"winner": "A"|"B"|
"tie"}``; the case scores 1 (candidate preferred both times), 0.5 (split or tie) or 0.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from strata.evals.cases import Case
from strata.evals.config import ScorerConfig
from strata.evals.scorers import Score

if TYPE_CHECKING:
    from strata.evals.client import Gateway

JUDGE_SYSTEM = ("You are a strict evaluator. Follow the rubric. Answer with one JSON object only, no other text.")
SCORE_TEMPLATE = """Rubric ({name} v{version}): {text}

Question:
{question}
{reference}
Answer to grade:
{answer}

Reply with JSON: {{"score": <integer 1-{scale}>, "rationale": "<one sentence>"}}"""
PAIR_TEMPLATE = """Rubric ({name} v{version}): {text}

Question:
{question}
{reference}
Answer A:
{a}

Answer B:
{b}

Which answer is better? Reply with JSON: {{"winner": "A" or "B" or "tie", "rationale": "<one sentence>"}}"""
OBJECT = re.compile(r"\{.*\}", re.DOTALL)
INTEGER = re.compile(r"\b(\d+)\b")


def _reference(case: Case) -> str:
    return f"\nReference answer:\n{case.reference}\n" if case.reference else ""


def parse_object(text: str) -> dict[str, Any]:
    match = OBJECT.search(text)
    if match:
        try:
            value = json.loads(match.group())
            if isinstance(value, dict):
                return value
        except ValueError:
            pass
    return {}


def parse_score(text: str, scale: int) -> tuple[float | None, str]:
    """The judge's 1..scale score as 0..1 (None when it gave none in range) and its rationale."""
    obj = parse_object(text)
    raw: Any = obj.get("score")
    if raw is None and (m := INTEGER.search(text)):
        raw = m.group(1)
    try:
        score = float(raw)
    except (TypeError, ValueError):
        return None, f"no score in the judge's answer: {text[:120]!r}"
    if not 1 <= score <= scale:
        return None, f"judge's score {score:g} is outside 1..{scale}"
    return (score - 1) / (scale - 1), str(obj.get("rationale") or text[:300])


def parse_winner(text: str) -> str | None:
    raw = str(parse_object(text).get("winner") or "").strip().upper()
    if raw in ("A", "B"):
        return raw
    return "TIE" if raw == "TIE" else None


async def judge(cfg: ScorerConfig, case: Case, output: str, gateway: Gateway, request_id: str) -> Score:
    r = cfg.rubric
    prompt = SCORE_TEMPLATE.format(name=r.name, version=r.version, text=r.text, question=case.question,
                                   reference=_reference(case), answer=output, scale=r.scale)
    assert cfg.route is not None
    answer = await gateway.chat(cfg.route, [{"role": "system", "content": JUDGE_SYSTEM},
                                            {"role": "user", "content": prompt}], "judge", request_id, 200)
    value, rationale = parse_score(answer.text, r.scale)
    return Score(value, rationale)


async def pairwise(cfg: ScorerConfig, case: Case, output: str, baseline: str | None, gateway: Gateway,
                   request_id: str) -> Score:
    if baseline is None:
        return Score(None, "no baseline answer for this case")
    r = cfg.rubric
    assert cfg.route is not None
    wins = 0.0
    reasons = []
    for order, (a, b) in enumerate(((output, baseline), (baseline, output))):
        prompt = PAIR_TEMPLATE.format(name=r.name, version=r.version, text=r.text, question=case.question,
                                      reference=_reference(case), a=a, b=b)
        answer = await gateway.chat(cfg.route, [{"role": "system", "content": JUDGE_SYSTEM},
                                                {"role": "user", "content": prompt}], "judge",
                                    f"{request_id}-{order}", 200)
        winner = parse_winner(answer.text)
        candidate = "A" if order == 0 else "B"
        wins += 1.0 if winner == candidate else 0.5 if winner in ("TIE", None) else 0.0
        reasons.append(f"{'candidate first' if order == 0 else 'baseline first'}: {winner or 'no verdict'}")
    return Score(wins / 2, "; ".join(reasons))
