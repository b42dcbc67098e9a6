"""Complexity routing: the transparent scorer (unit), the cheap and strong tiers as clients see them
(in-process gateway, one ``whoami`` upstream per tier), and the config errors an operator gets.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from strata.config.settings import ComplexityConfig, load_settings
from strata.errors import ConfigError
from strata.routing.complexity import TransparentScorer
from tests.servers import ledger_rows
from tests.test_cli import assert_one_line_error, strata
from tests.test_traffic import attempts_of, chat, dep, eventually, gateway, metric, route, served_by
from tests.upstreams import FaultyUpstream, letter_counts

EASY = "What is the capital of France?"
HARD = """I have a Python service that is slow. Please do the following:
1. Explain why the function below is quadratic and analyze its memory use.
2. Refactor it into an O(n log n) algorithm and justify each step.
3. Write a test that compares both versions on 10000 items.

```python
def dedupe(items):
    out = []
    for x in items:
        if x not in out:
            out.append(x)
    return out
```
What are the trade-offs? Which one would you ship, and why?"""
NO_EMBEDDINGS = {"embeddings_route": None}


def asking(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


async def embed(texts: list[str]) -> list[list[float]]:
    return [letter_counts(t) for t in texts]


async def embeddings_down(texts: list[str]) -> list[list[float]]:
    raise ConnectionError("embeddings route unreachable")


# --- the scorer ----------------------------------------------------------------------------------------------


async def test_a_short_plain_question_is_cheap_and_a_long_multipart_code_task_is_strong() -> None:
    scorer = TransparentScorer(ComplexityConfig(**NO_EMBEDDINGS))
    easy, hard = await scorer.score(asking(EASY)), await scorer.score(asking(HARD))
    assert (easy.tier, hard.tier) == ("cheap", "strong")
    assert easy.value < 0.1 and hard.value >= 0.5
    for s in (easy, hard):
        assert set(s.features) == {"length", "structure"}
        assert all(0.0 <= v <= 1.0 for v in s.features.values()), s.features
        assert s.value == round((s.features["length"] + s.features["structure"]) / 2, 4), "an equal-weight mean"
    assert easy.features["length"] == pytest.approx(len(EASY) / 2000)
    assert hard.features["structure"] == 1.0 and easy.features["structure"] == 0.0


async def test_weights_threshold_and_prompt_length_are_honoured() -> None:
    only_length = TransparentScorer(ComplexityConfig(structure_weight=0, **NO_EMBEDDINGS))
    score = await only_length.score(asking(HARD))
    assert (score.value, score.tier) == (round(score.features["length"], 4), "cheap")
    short_window = TransparentScorer(ComplexityConfig(long_prompt_chars=20, threshold=0.5, **NO_EMBEDDINGS))
    score = await short_window.score(asking("tell me about the weather today please"))
    assert (score.features["length"], score.value, score.tier) == (1.0, 0.5, "strong")
    completion = await TransparentScorer(ComplexityConfig(**NO_EMBEDDINGS)).score({"model": "m", "prompt": HARD})
    assert completion.tier == "strong", "completions prompts are scored like chat messages"


LABELLED = [{"text": "tensor sharding across pods", "hard": True}, {"text": "hello there friend", "hard": False}]


async def test_nearest_labelled_examples_decide_what_the_text_alone_cannot() -> None:
    cfg = ComplexityConfig(examples=LABELLED, k=1, threshold=0.4, embeddings_route="emb")
    scorer = TransparentScorer(cfg, embed)
    like_hard = await scorer.score(asking("tensor sharding across pods"))
    like_easy = await scorer.score(asking("hello there friend"))
    assert (like_hard.features["knn"], like_hard.tier) == (1.0, "strong")
    assert (like_easy.features["knn"], like_easy.tier) == (0.0, "cheap")
    f = like_hard.features
    assert like_hard.value == round((f["length"] + f["structure"] + 2 * f["knn"]) / 4, 4), "knn weighs 2 by default"
    assert (await TransparentScorer(cfg).score(asking("tensor sharding across pods"))).tier == "cheap", \
        "without embeddings the same text is cheap"

    both = TransparentScorer(cfg.model_copy(update={"k": 2}), embed)
    mixed = (await both.score(asking("tensor sharding across pods"))).features["knn"]
    assert 0.5 < mixed < 1.0, "two neighbours: the nearer (hard) one weighs more"


async def test_without_embeddings_the_other_weights_renormalise() -> None:
    cfg = ComplexityConfig(examples=LABELLED, k=1, threshold=0.4, embeddings_route="emb")
    down = TransparentScorer(cfg, embeddings_down)
    plain = TransparentScorer(cfg)
    for text in ("tensor sharding across pods", HARD):
        scored, reference = await down.score(asking(text)), await plain.score(asking(text))
        assert "knn" not in scored.features
        assert (scored.value, scored.tier) == (reference.value, reference.tier)
    assert (await down.score(asking(HARD))).tier == "strong"


def test_examples_file_is_loaded_and_a_bad_line_is_one_readable_error(tmp_path: Path) -> None:
    good = tmp_path / "examples.jsonl"
    good.write_text("\n".join(json.dumps(e) for e in LABELLED) + "\n\n")
    scorer = TransparentScorer(ComplexityConfig(examples=[{"text": "inline", "hard": True}], examples_file=good))
    loaded = [(e.text, e.hard) for e in scorer.examples]
    assert loaded == [("inline", True), *((e["text"], e["hard"]) for e in LABELLED)]

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(LABELLED[0]) + '\n{"text": "no label"}\n')
    with pytest.raises(ConfigError) as info:
        TransparentScorer(ComplexityConfig(examples_file=bad))
    assert len(info.value.message.splitlines()) == 1
    assert str(bad) in info.value.message and '"hard": true|false' in info.value.message

    with pytest.raises(ConfigError) as info:
        TransparentScorer(ComplexityConfig(examples_file=tmp_path / "missing.jsonl"))
    assert "missing.jsonl" in info.value.message and len(info.value.message.splitlines()) == 1


# --- tiers end to end ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tier_servers() -> Iterator[dict[str, FaultyUpstream]]:
    with contextlib.ExitStack() as stack:
        yield {n: stack.enter_context(FaultyUpstream(n)) for n in ("cheap", "strong")}


@pytest.fixture
def ups(tier_servers: dict[str, FaultyUpstream]) -> dict[str, FaultyUpstream]:
    for up in tier_servers.values():
        up.mode, up.hits = None, 0
    return tier_servers


def tiered(ups: dict[str, FaultyUpstream], **cfg: Any) -> dict[str, Any]:
    return route(dep("small", ups["cheap"], tier="cheap"), dep("large", ups["strong"], tier="strong"),
                 complexity=NO_EMBEDDINGS, retry_backoff=0.01, **cfg)


def messages(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def test_easy_requests_go_to_the_cheap_tier_and_hard_ones_to_the_strong(ups: dict[str, FaultyUpstream],
                                                                              tmp_path: Path) -> None:
    async with gateway(tmp_path, tiered(ups)) as client:
        for i in range(3):
            assert served_by(await chat(client, rid=f"easy-{i}", messages=messages(EASY))) == "cheap"
        assert served_by(await chat(client, rid="hard", messages=messages(HARD))) == "strong"
        assert await metric(client, "strata_route_tier_requests_total", route="m", tier="cheap") == 3.0
        assert await metric(client, "strata_route_tier_requests_total", route="m", tier="strong") == 1.0
        rows = await eventually(lambda: rs if len(rs := ledger_rows(tmp_path)) == 4 else None, "four ledger rows")
    by_id = {r["request_id"]: r for r in rows}
    assert (by_id["hard"]["tier"], by_id["hard"]["deployment"]) == ("strong", "large")
    assert by_id["hard"]["route_score"] >= 0.5
    for i in range(3):
        row = by_id[f"easy-{i}"]
        assert (row["tier"], row["deployment"]) == ("cheap", "small") and 0 <= row["route_score"] < 0.5
    assert (ups["cheap"].hits, ups["strong"].hits) == (3, 1)


async def test_hard_requests_are_answered_by_the_cheap_tier_while_the_strong_one_fails(
        ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    ups["strong"].mode = "err500"
    async with gateway(tmp_path, tiered(ups, retries=1)) as client:
        for i in range(8):
            assert served_by(await chat(client, rid=f"hard-{i}", messages=messages(HARD))) == "cheap"
        ups["strong"].mode = None
        assert await metric(client, "strata_route_tier_requests_total", route="m", tier="strong") == 8.0
        rows = await eventually(lambda: rs if len(rs := ledger_rows(tmp_path)) == 8 else None, "eight ledger rows")
    assert {(r["tier"], r["deployment"], r["status"]) for r in rows} == {("strong", "small", 200)}
    assert await attempts_of(tmp_path, "hard-0") == [("large", "bad_gateway", 502), ("small", "ok", 200)]
    assert await attempts_of(tmp_path, "hard-7") == [("small", "ok", 200)], "the ejected strong tier is skipped"
    assert 1 <= ups["strong"].hits <= 5, "tried until its breaker opened, then skipped"


async def test_a_route_without_complexity_ignores_tiers(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    plain = route(dep("small", ups["cheap"], tier="cheap"), dep("large", ups["strong"], tier="strong"))
    async with gateway(tmp_path, plain) as client:
        served = {served_by(await chat(client, messages=messages(EASY))) for _ in range(20)}
        assert served == {"cheap", "strong"}
        assert await metric(client, "strata_route_tier_requests_total", route="m", tier="cheap") is None
    assert {r["tier"] for r in ledger_rows(tmp_path)} == {None}


# --- config errors -------------------------------------------------------------------------------------------


UPSTREAM = {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}


def complexity_route(*tiers: str, **complexity: Any) -> dict[str, Any]:
    deps = [{"name": f"d-{t}", "engine": UPSTREAM, "tier": t} for t in tiers]
    return {"name": "r", "deployments": deps, "complexity": {"embeddings_route": None, **complexity}}


def test_complexity_without_both_tiers_is_a_one_line_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, data_dir=tmp_path, routes=[complexity_route("cheap")])
    assert len(info.value.message.splitlines()) == 1
    assert "tier 'cheap' and tier 'strong'" in info.value.message

    path = tmp_path / "strata.yaml"
    path.write_text(yaml.safe_dump({"routes": [complexity_route("strong")]}))
    p = strata("up", "--config", str(path), "--data-dir", str(tmp_path))
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, "routes.0", "tier 'strong'")


def test_up_with_a_bad_examples_file_names_it_in_one_line(tmp_path: Path) -> None:
    examples = tmp_path / "examples.jsonl"
    examples.write_text("not json\n")
    path = tmp_path / "strata.yaml"
    path.write_text(yaml.safe_dump({"routes": [complexity_route("cheap", "strong", examples_file=str(examples))]}))
    p = strata("up", "--config", str(path), "--data-dir", str(tmp_path))
    assert p.returncode == 2, p.stderr
    assert_one_line_error(p, str(examples))
