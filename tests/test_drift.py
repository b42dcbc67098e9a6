"""Drift detection end to end (``strata.observe.drift``).

1. The store, the report and the check loop on SQLite and PostgreSQL, with an injected clock: a baseline of
   short English prompts, then long German ones, flags prompt embedding + length + language once (one
   ``drift_detected`` event per onset), then goes quiet again when traffic looks like the baseline.
2. A real ``strata up`` with the bundled MiniLM (embeddings) and a chat upstream, every request sampled: a
   baseline of short English questions, an unshifted stream (more of the same questions) that is not flagged,
   then long German prompts that are, with effect sizes and p-values in the admin API, the CLI, the metrics
   and one operator event.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
import pytest
from aiohttp import web
from sqlalchemy import Engine

from strata.observe.drift.config import DriftSettings
from strata.observe.drift.features import Observation, is_refusal, language
from strata.observe.drift.monitor import DriftMonitor
from strata.observe.drift.store import DriftStore
from strata.observe.events import EventStore
from strata.observe.metrics import Metrics
from strata.store.db import open_database
from tests.conftest import HAVE_LOCAL_MODELS
from tests.servers import StrataProcess, cli, finished, ledger_rows, openai_route, wait_for
from tests.upstreams import free_port

COUNTRIES = ["France", "Spain", "Italy", "Japan", "Canada", "Brazil", "Kenya", "Norway", "Peru", "Egypt", "India",
             "Chile", "Greece", "Poland", "Mexico", "Ghana", "Nepal", "Cuba", "Iran", "Laos"]
ENGLISH = ([f"What is the capital of {c}?" for c in COUNTRIES] + [f"What language is spoken in {c}?" for c in
           COUNTRIES] + [f"How big is {c}?" for c in COUNTRIES])
TOPICS = ["die Energiewende", "das Bahnnetz", "die Steuererklärung", "den Klimawandel", "die Rentenversicherung",
          "das Gesundheitssystem", "die Digitalisierung der Schulen", "den Wohnungsmarkt", "die Landwirtschaft",
          "die Künstliche Intelligenz", "den Föderalismus", "die Wasserversorgung", "die Mülltrennung",
          "das Urheberrecht", "die Pflegeversicherung"]


def german(topic: str, i: int) -> str:
    return (f"Bitte erkläre mir ausführlich und in einfachen Worten, wie {topic} in Deutschland funktioniert, "
            f"warum es darüber so viele Diskussionen gibt und was die wichtigsten Argumente der Befürworter und "
            f"der Kritiker sind. Ich bin kein Experte, aber ich möchte verstehen, was sich in den letzten zehn "
            f"Jahren verändert hat und was in Zukunft auf uns zukommt. Gib mir bitte auch {i % 3 + 2} konkrete "
            f"Beispiele, damit ich es meinen Kollegen bei der nächsten Besprechung erklären kann.")


GERMAN = [german(t, i) for i, t in enumerate(TOPICS * 2)]


def test_language_and_refusal_features() -> None:
    assert [language(t) for t in (ENGLISH[0], GERMAN[0], "Où est la gare, s'il vous plaît ? Je ne sais pas.",
                                  "Какая столица Франции?", "日本の首都はどこですか", "12345", "")] == [
        "en", "de", "fr", "Cyrl", "Jpan", "und", "und"]
    assert is_refusal("I'm sorry, but I can't help with that.") and is_refusal("As an AI, I cannot do that")
    assert not is_refusal("Sure! The capital of France is Paris.")


# -- 1. store, report and loop on both databases, injected clock --------------------------------------------


def fake_embedding(text: str) -> list[float]:
    """A deterministic stand-in for a sentence embedding: German texts lean one way, English the other."""
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big"))
    v = rng.standard_normal(32)
    v[0] += 3.0 if language(text) == "de" else 0.0
    return (v / np.linalg.norm(v)).tolist()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    db = open_database(db_url)
    yield db
    db.dispose()


async def test_check_loop_flags_a_shift_once_per_onset(engine: Engine) -> None:
    cfg = DriftSettings(enabled=True, sample_rate=1.0, min_samples=20, window=3600, alpha=0.01, permutations=200)
    metrics, clock = Metrics(), Clock()
    events = EventStore(engine, metrics)

    async def embed(texts: list[str]) -> list[list[float]]:
        return [fake_embedding(t) for t in texts]

    monitor = DriftMonitor(cfg, DriftStore(engine), metrics, events.emit, embed, clock=clock)

    async def traffic(prompts: list[str]) -> None:
        for i, p in enumerate(prompts):
            monitor.offer(Observation("chat", "chat-dep", clock.now.timestamp() + i, p, "Sure, here it is.",
                                      len(p) // 4, 8, tool_call=False))
            monitor.record_retrieved("chat", [fake_embedding(p + " chunk")])  # what the RAG stage would report
        await monitor.flush()
        clock.now += timedelta(seconds=len(prompts) + 1)

    rng = random.Random(3)
    english = ENGLISH[:]
    rng.shuffle(english)
    await traffic(english[:30])
    monitor.store.set_baseline("chat", clock.now - timedelta(hours=1), clock.now, "test")
    await traffic(english[30:60])
    [report] = await monitor.check()
    assert report["status"] == "ok" and report["detected"] == [], report
    assert (report["reference"]["kind"], report["reference"]["n"], report["current"]["n"]) == ("baseline", 30, 30)
    assert all(0 <= s["p_value"] <= s["p_adjusted"] <= 1 for s in report["signals"])

    clock.now += timedelta(seconds=5)
    monitor.store.clear_baseline("chat")
    monitor.store.set_baseline("chat", clock.now - timedelta(hours=2), clock.now, "test")  # all English so far
    await traffic(GERMAN)
    [report] = await monitor.check()
    assert report["status"] == "drift"
    assert {"prompt_embedding", "prompt_tokens", "language"} <= set(report["detected"]), report
    by_name = {s["signal"]: s for s in report["signals"]}
    assert by_name["language"]["statistic"] > 0.9 and by_name["language"]["p_adjusted"] < 0.01
    assert by_name["answer_tokens"]["detected"] is False  # the answers did not change
    assert by_name["retrieved_embedding"]["n_current"] == 30 and by_name["retrieved_embedding"]["detected"]
    [report] = await monitor.check()  # still drifting: no second event
    replica = DriftMonitor(cfg, DriftStore(engine), Metrics(), events.emit, embed, clock=clock)
    [again] = await replica.check()  # another replica sharing the database (or a restart): no second event either
    assert again["status"] == "drift"
    assert len(events.list(kind="drift_detected")) == 1
    event = events.list(kind="drift_detected")[0]
    assert event["subject"] == "chat" and "language" in event["message"]
    assert metrics.drift_detected.labels("chat", "language")._value.get() == 1

    clock.now += timedelta(hours=2)  # the German traffic left the current window; English again
    await traffic(english[:30])
    [report] = await monitor.check()
    assert report["status"] == "ok", report
    clock.now += timedelta(days=cfg.retention_days + 1)
    await monitor.check()
    assert monitor.store.routes() == []  # retention: every observation is older than retention_days


# -- 2. a real server: real MiniLM embeddings, a chat upstream that counts tokens -------------------------------


class CountingUpstream:
    """A small OpenAI-compatible chat server that answers at once and reports real-ish usage (words x 1.3):
    the chat model's own answers do not matter to prompt drift, and SmolLM2 on a shared 2-core box takes
    seconds per long German prompt, so the prompts go here while the embeddings come from the bundled MiniLM."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> CountingUpstream:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        answer = "You asked: " + " ".join(prompt.split()[:12])
        usage = {"prompt_tokens": round(len(prompt.split()) * 1.3) + 5, "completion_tokens": len(answer.split())}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return web.json_response({"id": "c", "object": "chat.completion", "created": 0, "model": "echo",
                                  "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                               "finish_reason": "stop"}], "usage": usage})

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture(scope="module")
def strata(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    if not HAVE_LOCAL_MODELS:
        pytest.skip("bundled models not installed (make test installs them)")
    with CountingUpstream() as upstream:
        minilm = {"name": "minilm", "deployments": [{"name": "minilm-local",
                                                     "engine": {"type": "sentence-transformers"}}]}
        config = {"routes": [openai_route("chat", upstream.base_url, "echo"), minilm],
                  "drift": {"enabled": True, "sample_rate": 1.0, "interval": 1.0, "flush_interval": 0.5,
                            "min_samples": 20, "window": 3600, "alpha": 0.01}}
        proc = StrataProcess(tmp_path_factory.mktemp("drift"), config)
        proc.start(ready_timeout=300)
        yield proc
        proc.stop()


async def send(proc: StrataProcess, prompts: list[str]) -> None:
    client = proc.async_client().with_options(timeout=60)
    gate = asyncio.Semaphore(8)

    async def one(prompt: str) -> None:
        async with gate:
            await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": prompt}])

    await asyncio.gather(*(one(p) for p in prompts))


def sampled(proc: StrataProcess, n: int) -> None:
    wait_for(lambda: (proc.metric("strata_drift_samples_total", route="chat", outcome="sampled") or 0) >= n,
             180, f"{n} drift observations of route chat")


def checks(proc: StrataProcess) -> float:
    return sum(proc.metric("strata_drift_checks_total", route="chat", outcome=o) or 0
               for o in ("ok", "drift", "insufficient_data"))


def next_report(proc: StrataProcess) -> dict[str, Any]:
    """The stored report of a check that started after now."""
    seen = checks(proc)
    wait_for(lambda: checks(proc) >= seen + 2, 120, "two more drift checks")
    r = proc.admin("GET", "/admin/drift/chat")
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.model
async def test_real_traffic_shift_is_flagged_and_an_unshifted_stream_is_not(strata: StrataProcess) -> None:
    rng = random.Random(11)
    english = ENGLISH[:]
    rng.shuffle(english)
    await send(strata, english[:30])
    sampled(strata, 30)
    r = strata.admin("POST", "/admin/drift/chat/baseline", json={})
    assert r.status_code == 200, r.text
    assert r.json()["n"] == 30 and r.json()["route"] == "chat"

    await send(strata, english[30:60])
    sampled(strata, 60)
    report = next_report(strata)
    assert report["reference"]["kind"] == "baseline" and report["reference"]["n"] == 30
    assert report["current"]["n"] == 30
    assert report["status"] == "ok" and report["detected"] == [], report
    tested = {s["signal"] for s in report["signals"]}
    assert {"prompt_embedding", "answer_embedding", "prompt_tokens", "answer_tokens", "language"} <= tested
    assert strata.metric("strata_drift_detected", route="chat", signal="prompt_embedding") == 0
    unshifted_until = datetime.now(UTC)

    await send(strata, GERMAN)
    sampled(strata, 90)
    fresh = strata.admin("GET", "/admin/drift/chat", params={"from": unshifted_until.isoformat()}).json()
    assert fresh["current"]["n"] == 30
    assert {"prompt_embedding", "prompt_tokens", "language"} <= set(fresh["detected"]), fresh
    for s in fresh["signals"]:
        if s["signal"] in ("prompt_embedding", "prompt_tokens", "language"):
            assert s["p_adjusted"] < 0.01 and s["statistic"] >= s["min_effect"], s

    report = wait_for(lambda: (r := next_report(strata))["status"] == "drift" and r, 120, "the loop's drift report")
    assert "language" in report["detected"]
    assert strata.metric("strata_drift_detected", route="chat", signal="language") == 1
    assert 0 <= (strata.metric("strata_drift_p_value", route="chat", signal="language") or 1) < 0.01
    next_report(strata)  # one more pass, still drifting
    events = strata.admin("GET", "/admin/events", params={"kind": "drift_detected"}).json()["data"]
    assert len(events) == 1 and events[0]["subject"] == "chat", events

    listed, shown = cli(strata, "drift", "report", "--json"), cli(strata, "drift", "baseline", "show", "chat",
                                                                   "--json")
    out = finished(listed)
    assert out.returncode == 0, out.stderr
    assert [r["route"] for r in json.loads(out.stdout)] == ["chat"]
    base = finished(shown)
    assert base.returncode == 0 and json.loads(base.stdout)["n"] == 30, base.stderr
    roles = {row["role"] for row in ledger_rows(strata.data_dir) if row["route"] == "minilm"}
    assert roles == {"drift"}, "the embeddings are accounted as the gateway's drift calls"


@pytest.mark.model
def test_drift_admin_needs_permission_and_known_routes(strata: StrataProcess) -> None:
    member = strata.admin("POST", "/admin/keys", json={"name": "m", "team": "t"}).json()["key"]
    r = httpx.get(strata.url + "/admin/drift", headers={"Authorization": f"Bearer {member}"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied"
    r = strata.admin("GET", "/admin/drift/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "route_not_found"
    r = strata.admin("POST", "/admin/drift/chat/baseline", json={"from": "2026-01-02T00:00:00+00:00",
                                                                  "to": "2026-01-01T00:00:00+00:00"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "from"
    r = strata.admin("DELETE", "/admin/drift/chat/baseline")
    assert r.status_code == 200 and strata.admin("GET", "/admin/drift/chat/baseline").status_code == 404
