"""Drift per model version and answer drift in the canary analysis (``routing.answer_drift``).

One real Strata process, real MiniLM embeddings (route ``minilm``), small real upstreams (``tests.upstreams``):
route ``drifting`` has a primary answering short English sentences and a canary answering long German text;
route ``steady`` has a primary and a canary answering from the same English sentences. Drift samples every
answer of both routes, so each arm's answers reach the canary analysis (and the drift store, per deployment).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from strata.cli.main import app
from strata.errors import ConfigError
from strata.routing.analysis import Window, compare
from strata.routing.answer_drift import Answer
from strata.routing.config import CanaryConfig
from tests.conftest import HAVE_LOCAL_MODELS
from tests.servers import ADMIN_KEY, StrataProcess, wait_for
from tests.upstreams import FaultyUpstream

ENGLISH = ["Hello! How can I help you today?", "Sure, here is a short answer.", "The sky is blue.",
           "Paris is the capital of France.", "Two plus two is four.", "I think that is right.",
           "Yes, that works fine.", "Water boils at 100 degrees Celsius."]
GERMAN = [("Die Geschichte der Stadt reicht weit in das Mittelalter zurück, als Händler aus dem ganzen Land "
           "auf dem Marktplatz ihre Waren anboten und die Zünfte das wirtschaftliche Leben bestimmten. ") * 3,
          ("Im Winter fällt in den Bergen viel Schnee, und die Dörfer im Tal sind oft tagelang von der "
           "Außenwelt abgeschnitten, während die Bauern ihre Tiere in warmen Ställen versorgen. ") * 3,
          ("Das Verfahren wurde nach langen Verhandlungen zwischen den Behörden und den Verbänden schließlich "
           "eingestellt, weil die Beweislage nach Ansicht des Gerichts nicht ausreichte. ") * 3]
CANARY = {"interval": 0.2, "window": 1e6, "min_requests": 30, "confidence": 0.95, "max_latency_ratio": 100,
          "max_ttft_ratio": 100, "max_cost_ratio": 100, "max_answer_drift": 0.1}


def canaried(name: str, primary: FaultyUpstream, canary: FaultyUpstream) -> dict[str, Any]:
    def engine(up: FaultyUpstream) -> dict[str, Any]:
        return {"type": "openai", "base_url": up.base_url, "model": "ok"}

    return {"name": name, "retries": 0, "canary": CANARY, "deployments": [
        {"name": f"{name}-v1", "engine": engine(primary)},
        {"name": f"{name}-v2", "role": "canary", "traffic": 50, "engine": engine(canary)}]}


@pytest.fixture(scope="module")
def ups() -> Iterator[dict[str, FaultyUpstream]]:
    servers = {n: FaultyUpstream(n) for n in ("en", "de", "en-a", "en-b")}
    for name, s in servers.items():
        s.__enter__()
        pool = GERMAN if name == "de" else ENGLISH
        s.replies = list(itertools.islice(itertools.cycle(pool), 2000))
    yield servers
    for s in servers.values():
        s.__exit__(None, None, None)


@pytest.fixture(scope="module")
def proc(ups: dict[str, FaultyUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    if not HAVE_LOCAL_MODELS:
        pytest.skip("bundled models not installed (make test installs them)")
    minilm = {"name": "minilm", "deployments": [{"name": "minilm-local", "engine": {"type": "sentence-transformers"}}]}
    config = {"routes": [canaried("drifting", ups["en"], ups["de"]), canaried("steady", ups["en-a"], ups["en-b"]),
                         minilm],
              "drift": {"enabled": True, "sample_rate": 1.0, "routes": ["drifting", "steady"], "interval": 3600,
                        "flush_interval": 0.2, "min_samples": 5, "window": 3600}}
    p = StrataProcess(tmp_path_factory.mktemp("canary-drift"), config)
    p.start(ready_timeout=300)
    yield p
    p.stop()


def has_canary(proc: StrataProcess, route: str) -> bool:
    return any(d["role"] == "canary" for d in proc.admin("GET", f"/admin/routes/{route}").json()["deployments"])


def test_a_canary_answering_in_another_way_is_rolled_back_for_answer_drift(proc: StrataProcess) -> None:
    client = proc.client(timeout=60)

    def gone() -> bool:
        if not has_canary(proc, "drifting"):
            return True
        client.chat.completions.create(model="drifting", messages=[{"role": "user", "content": "Tell me something."}])
        return False

    wait_for(gone, 150, "the drifting canary's rollback", interval=0.05)
    events = proc.admin("GET", "/admin/events?kind=canary_rollback&subject=drifting").json()["data"]
    assert events, "a canary_rollback event"
    assert "answer drift: answer embeddings MMD²" in events[0]["message"]
    checks = {c["metric"]: c for c in events[0]["data"]["analysis"]["checks"]}
    assert checks["answer_drift"]["worse"] and not checks["error_rate"]["worse"]

    # the drift report shows both arms; per deployment, only that version's answers
    seen: list[dict[str, int]] = []

    def settled() -> dict[str, int] | None:  # answers still being embedded when the rollback came land first
        both = proc.admin("GET", "/admin/drift/drifting", params={"fresh": "true"}).json()
        seen.append(both["current"]["deployments"])
        return seen[-1] if len(seen) > 1 and seen[-1] == seen[-2] else None

    arms = wait_for(settled, 60, "the drift observations to settle", interval=0.5)
    assert set(arms) == {"drifting-v1", "drifting-v2"} and min(arms.values()) >= 10
    one = proc.admin("GET", "/admin/drift/drifting", params={"deployment": "drifting-v2"}).json()
    assert one["deployment"] == "drifting-v2"
    assert one["current"]["deployments"] == {"drifting-v2": arms["drifting-v2"]}
    r = proc.admin("GET", "/admin/drift/drifting", params={"deployment": "nope"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "deployment_not_found"
    out = CliRunner().invoke(app, ["drift", "report", "drifting", "--deployment", "drifting-v1", "--url", proc.url,
                                   "--key", ADMIN_KEY], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    assert "drifting deployment drifting-v1" in out.output and f"drifting-v1 {arms['drifting-v1']}" in out.output


def test_a_canary_answering_like_the_primary_is_not_rolled_back(proc: StrataProcess) -> None:
    client = proc.client(timeout=60)

    def judged() -> dict[str, Any] | None:
        client.chat.completions.create(model="steady", messages=[{"role": "user", "content": "Tell me something."}])
        analysis = proc.admin("GET", "/admin/routes/steady/rollout").json()["rollout"]["analysis"] or {}
        check = next((c for c in analysis.get("checks", []) if c["metric"] == "answer_drift"), None)
        return check if check and check["decided"] else None

    check = wait_for(judged, 150, "an answer drift verdict on the steady canary", interval=0.05)
    assert not check["worse"], check
    assert has_canary(proc, "steady")
    assert not proc.admin("GET", "/admin/events?kind=canary_rollback&subject=steady").json()["data"]


def test_an_answer_drift_limit_without_drift_sampling_stops_the_start(tmp_path: Path) -> None:
    from strata.app import create_app
    from strata.config.settings import load_settings

    route = {"name": "a", "canary": {"max_answer_drift": 0.1}, "deployments": [
        {"name": "a-v1", "engine": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}]}
    with pytest.raises(ConfigError, match=r"routes\[a\].canary.max_answer_drift needs drift sampling on"):
        create_app(load_settings(None, data_dir=tmp_path, routes=[route]))


def test_the_answer_drift_check_needs_enough_samples_and_a_large_effect() -> None:
    def arm(n: int, vec: list[float], tokens: int) -> Window:
        w = Window()
        w.answers.extend((0.0, Answer([v + (i % 3) * 0.01 for v in vec], tokens + i % 4, False)) for i in range(n))
        return w

    cfg = CanaryConfig(min_requests=30, max_answer_drift=0.1)
    few = compare(arm(5, [1, 0, 0], 10), arm(50, [0, 1, 0], 10), cfg)
    assert [c.detail for c in few.checks if c.metric == "answer_drift"] == [
        "answer drift: 5/50 sampled answers, too few"]
    far = compare(arm(40, [1, 0, 0], 300), arm(40, [0, 1, 0], 10), cfg)
    assert "answer_drift" in [c.metric for c in far.worse] and "answer length KS D 1" in far.reason
    near = compare(arm(40, [1, 0, 0], 10), arm(40, [1, 0, 0], 10), cfg)
    assert near.worse == []
    off = compare(arm(40, [1, 0, 0], 300), arm(40, [0, 1, 0], 10), CanaryConfig(min_requests=30))
    assert "answer_drift" not in [c.metric for c in off.checks]


def test_the_drift_store_reads_one_deployment_on_each_database(db_url: str) -> None:
    from datetime import UTC, datetime, timedelta

    from strata.observe.drift.config import DriftSettings
    from strata.observe.drift.report import build_report
    from strata.observe.drift.store import DriftStore
    from strata.store.db import open_database

    engine = open_database(db_url)
    try:
        store, now = DriftStore(engine), datetime(2026, 3, 1, 12, tzinfo=UTC)

        def row(i: int, deployment: str, tokens: int) -> dict[str, Any]:
            return {"at": now - timedelta(seconds=10 + i), "route": "chat", "kind": "request",
                    "deployment": deployment, "prompt_tokens": 5, "answer_tokens": tokens, "refusal": False,
                    "tool_call": False, "language": "en", "prompt_vec": None, "answer_vec": None,
                    "retrieved_vec": None}

        store.add([row(i, "chat-v1", 10 + i % 3) for i in range(8)] + [row(i, "chat-v2", 400) for i in range(6)])
        assert store.deployments("chat") == {"chat-v1", "chat-v2"}
        cfg = DriftSettings(enabled=True, min_samples=5, window=3600)
        whole = build_report(cfg, store, "chat", now)
        assert (whole["deployment"], whole["current"]["deployments"]) == (None, {"chat-v1": 8, "chat-v2": 6})
        v2 = build_report(cfg, store, "chat", now, deployment="chat-v2")
        assert (v2["current"]["n"], v2["current"]["deployments"]) == (6, {"chat-v2": 6})
    finally:
        engine.dispose()
