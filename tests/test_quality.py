"""Online quality (``strata.observe.quality``): sampled answers are scored after they are served, by a judge
route and the heuristic scorers; the scores land in ``quality_scores`` (with ``/v1/feedback``'s), in the
request's trace and in the metrics; reports aggregate them with confidence intervals; a stalled judge never
holds a client; a canary whose answers are worse is rolled back on quality.

One real Strata process serves every end-to-end test here. Its upstreams are small real servers
(``tests.upstreams``): the answering one, a judge that always grades 4 of 5, a judge that hangs, and a canary
that refuses everything. The bundled SmolLM2 judges in one test of its own (plumbing only).
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types.chat import ChatCompletionMessageParam
from typer.testing import CliRunner, Result

from strata.cli.main import app
from strata.errors import ConfigError
from strata.observe.quality.config import JudgeConfig, QualityConfig, RubricConfig
from strata.observe.quality.judge import JudgeFailed, find_rubric, parse
from strata.observe.quality.report import report, t_quantile, wilson
from strata.observe.quality.scorers import EmptyScorer, JsonScorer, RefusalScorer, Sample
from strata.observe.quality.store import request_scores, write
from strata.routing.analysis import Outcome, Window, compare
from strata.routing.config import CanaryConfig
from strata.store.db import open_database
from tests.conftest import needs_models
from tests.servers import ADMIN_KEY, StrataProcess, wait_for
from tests.upstreams import REPLY, FaultyUpstream

JUDGE_ANSWER = '{"score": 4, "rationale": "Clear and correct."}'
REFUSAL = "I'm sorry, but I can't help with that."
HI: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello."}]


def upstream_route(name: str, up: FaultyUpstream, **more: Any) -> dict[str, Any]:
    return {"name": name, "retries": 0, **more, "deployments": [
        {"name": f"{name}-dep", "engine": {"type": "openai", "base_url": up.base_url, "model": "ok"}}]}


@pytest.fixture(scope="module")
def ups() -> Iterator[dict[str, FaultyUpstream]]:
    names = ("app", "judge", "stall", "primary", "refuser")
    servers = {n: FaultyUpstream(n) for n in names}
    for s in servers.values():
        s.__enter__()
    servers["judge"].replies = [JUDGE_ANSWER] * 1000
    servers["stall"].mode = "stall"
    servers["refuser"].replies = [REFUSAL] * 1000
    yield servers
    for s in servers.values():
        s.__exit__(None, None, None)


@pytest.fixture(scope="module")
def q(ups: dict[str, FaultyUpstream], tmp_path_factory: pytest.TempPathFactory) -> Iterator[StrataProcess]:
    everything = {"sample_rate": 1.0, "scorers": ["judge", "refusal", "empty", "json"], "judge": {"route": "judge"}}
    canaried = upstream_route("canaried", ups["primary"], quality={"sample_rate": 1.0, "scorers": ["refusal"]},
                              canary={"interval": 0.2, "window": 1e6, "min_requests": 10, "max_latency_ratio": 100,
                                      "max_ttft_ratio": 100, "max_quality_drop": 0.2})
    canaried["deployments"].append({"name": "canaried-next", "role": "canary", "traffic": 50, "engine": {
        "type": "openai", "base_url": ups["refuser"].base_url, "model": "ok"}})
    routes = [
        upstream_route("chat", ups["app"], quality={**everything, "max_concurrency": 8}),
        upstream_route("judge", ups["judge"]),
        upstream_route("stalled", ups["app"], quality={"sample_rate": 1.0, "max_concurrency": 1, "timeout": 300,
                                                       "scorers": ["judge"], "judge": {"route": "stalljudge"}}),
        upstream_route("stalljudge", ups["stall"]),
        upstream_route("control", ups["app"]),
        canaried,
    ]
    proc = StrataProcess(tmp_path_factory.mktemp("quality"), {"routes": routes, "ledger": {"flush_interval": 0.05}})
    proc.start(ready_timeout=60)
    yield proc
    proc.stop()


def strata(q: StrataProcess, *args: str) -> Result:
    """The ``strata`` CLI against the running server, in this process (a subprocess per command costs seconds
    of imports on a busy machine); it talks to the server over HTTP like the installed command."""
    return CliRunner().invoke(app, [*args, "--url", q.url, "--key", ADMIN_KEY], env={"COLUMNS": "200"})


def scores_of(q: StrataProcess, rid: str, n: int) -> dict[str, Any]:
    """The request's scores once ``n`` of them are stored."""
    def probe() -> dict[str, Any] | None:
        r = q.admin("GET", f"/admin/quality/{rid}")
        return r.json() if r.status_code == 200 and len(r.json()["scores"]) >= n else None
    return wait_for(probe, 30, f"{n} quality scores of {rid}")


def by_scorer(found: dict[str, Any]) -> dict[str, tuple[float, str | None]]:
    return {s["scorer"]: (s["value"], s["label"]) for s in found["scores"] if s["source"] == "sampled"}


# --- end to end ----------------------------------------------------------------------------------------


def test_a_sampled_answer_is_scored_into_the_store_the_ledger_the_trace_and_the_metrics(q: StrataProcess) -> None:
    raw = q.client().chat.completions.with_raw_response.create(model="chat", messages=HI)
    assert raw.parse().choices[0].message.content == REPLY
    rid, trace_id = raw.headers["x-request-id"], raw.headers["x-strata-trace-id"]

    found = scores_of(q, rid, 3)
    assert by_scorer(found) == {"judge": (0.75, "pass"), "refusal": (1.0, "answered"), "empty": (1.0, "complete")}
    judge = next(s for s in found["scores"] if s["scorer"] == "judge")
    assert (judge["scorer_version"], judge["rationale"], judge["trace_id"]) == ("helpfulness@1", "Clear and correct.",
                                                                               trace_id)
    assert found["served"]["deployment"] == "chat-dep"

    # the judge's call is accounted like any: its own ledger row, role judge, under the judged request's id
    rows = wait_for(lambda: [r for r in q.ledger() if r["request_id"] == rid and r["role"] == "judge"], 10,
                    "the judge's ledger row")
    assert (rows[0]["route"], rows[0]["status"], rows[0]["prompt_tokens"]) == ("judge", 200, 7)
    calls = q.admin("GET", f"/admin/quality/{rid}").json()["internal_calls"]
    assert [(c["role"], c["route"]) for c in calls] == [("judge", "judge")]

    # the score is a late span of the request's trace, under its root, with the judge's call inside it
    def traced() -> dict[str, Any] | None:
        t = q.admin("GET", f"/admin/traces/{trace_id}").json()
        return t if any(s["name"] == "quality chat" for s in t.get("spans", [])) else None
    trace = wait_for(traced, 10, "the quality span in the trace")
    root = trace["tree"][0]
    quality = next(c for c in root["children"] if c["name"] == "quality chat")
    assert quality["attributes"]["strata.quality.judge"] == 0.75
    assert quality["attributes"]["strata.quality.judge.version"] == "helpfulness@1"
    assert [c["attributes"]["strata.role"] for c in quality["children"]] == ["judge"]
    assert q.admin("GET", f"/admin/traces/{rid}").json()["trace_id"] == trace_id  # by request id too
    listed = q.admin("GET", "/admin/traces?route=chat").json()["data"]
    assert rid in [t["request_id"] for t in listed] and all(t["name"] == "chat chat" for t in listed)

    assert (q.metric("strata_quality_score_count", route="chat", deployment="chat-dep", scorer="judge") or 0) >= 1
    assert (q.metric("strata_quality_samples_total", route="chat", outcome="scored") or 0) >= 1


def test_json_asked_for_and_not_given_scores_zero_and_a_stream_is_scored_when_it_ends(q: StrataProcess) -> None:
    raw = q.client().chat.completions.with_raw_response.create(model="chat", messages=HI,
                                                               response_format={"type": "json_object"})
    found = scores_of(q, raw.headers["x-request-id"], 4)
    assert by_scorer(found)["json"] == (0.0, "invalid")
    assert "not JSON" in next(s["rationale"] for s in found["scores"] if s["scorer"] == "json")

    with q.client().chat.completions.with_streaming_response.create(model="chat", messages=HI, stream=True) as r:
        rid = r.headers["x-request-id"]
        text = "".join(c.choices[0].delta.content or "" for c in r.parse() if c.choices)
    assert text == REPLY
    assert by_scorer(scores_of(q, rid, 3))["empty"] == (1.0, "complete")


def test_feedback_joins_the_store_and_the_report_has_means_and_intervals(q: StrataProcess) -> None:
    client = q.client()
    rids = [client.chat.completions.with_raw_response.create(model="chat", messages=HI).headers["x-request-id"]
            for _ in range(3)]
    for rid in rids:
        scores_of(q, rid, 3)
    r = httpx.post(q.url + "/v1/feedback", json={"request_id": rids[0], "score": 1, "name": "thumbs"},
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    fb = [s for s in q.admin("GET", f"/admin/quality/{rids[0]}").json()["scores"] if s["source"] == "feedback"]
    assert [(s["scorer"], s["value"]) for s in fb] == [("thumbs", 1.0)]

    out = strata(q, "quality", "report", "--route", "chat", "--window", "1h", "--json")
    assert out.exit_code == 0, out.output
    groups = {(g["source"], g["scorer"]): g for g in json.loads(out.stdout)["data"]}
    judge = groups[("sampled", "judge")]
    assert judge["n"] >= 3 and judge["mean"] == 0.75 and judge["deployment"] == "chat-dep"
    assert judge["ci_low"] <= 0.75 <= judge["ci_high"]
    refusal = groups[("sampled", "refusal")]
    assert refusal["interval"] == "wilson" and refusal["mean"] == 1.0 and refusal["ci_low"] < 1.0
    assert groups[("feedback", "thumbs")]["n"] == 1

    shown = strata(q, "quality", "scores", rids[0])
    assert shown.exit_code == 0, shown.output
    assert "helpfulness@1" in shown.stdout and "thumbs" in shown.stdout
    bad = strata(q, "quality", "report", "--window", "2y")
    assert bad.exit_code != 0 and "window" in bad.output


def test_another_teams_scores_are_not_found(q: StrataProcess) -> None:
    def key(team: str, role: str) -> str:
        r = q.admin("POST", "/admin/keys", json={"name": f"{team}-{role}", "team": team, "role": role,
                                                 "scopes": {"teams": [team]}})
        assert r.status_code == 200, r.text
        return str(r.json()["key"])

    rid = q.client(key("red", "member")).chat.completions.with_raw_response.create(
        model="chat", messages=HI).headers["x-request-id"]
    scores_of(q, rid, 3)
    red, blue = key("red", "analyst"), key("blue", "analyst")

    def get(k: str, path: str) -> httpx.Response:
        return httpx.get(q.url + path, headers={"Authorization": f"Bearer {k}"}, timeout=10)

    assert get(red, f"/admin/quality/{rid}").status_code == 200
    r = get(blue, f"/admin/quality/{rid}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"
    assert get(blue, "/admin/quality?route=chat").json()["data"] == []
    assert [g["n"] for g in get(red, "/admin/quality?route=chat").json()["data"] if g["scorer"] == "judge"] == [1]
    member = key("red", "member")
    assert get(member, "/admin/quality").status_code == 403


def test_a_stalled_judge_never_holds_a_client(q: StrataProcess, ups: dict[str, FaultyUpstream]) -> None:
    client = q.client(timeout=30)
    control: list[float] = []
    judged: list[float] = []
    for _ in range(6):  # interleaved, so both see the same machine load
        for model, times in (("control", control), ("stalled", judged)):
            t0 = time.perf_counter()
            assert client.chat.completions.create(model=model, messages=HI).choices[0].message.content == REPLY
            times.append(time.perf_counter() - t0)
    # the first sample's judge hangs (the upstream sleeps 60 s), holding the route's one scoring slot
    assert wait_for(lambda: ups["stall"].hits, 10, "the judge call") == 1
    assert q.metric("strata_quality_samples_total", route="stalled", outcome="scored") in (None, 0.0)
    assert q.metric("strata_quality_samples_total", route="stalled", outcome="skipped_busy") == 5
    # relative to the control route on the same upstream: no request waited for the judge
    assert statistics.median(judged) < 3 * statistics.median(control) + 0.25, (judged, control)
    assert max(judged) < 10, judged  # far below the judge's 60 s stall


def test_a_canary_that_refuses_is_rolled_back_on_quality(q: StrataProcess) -> None:
    client = q.client()
    served = {"canaried-dep": 0, "canaried-next": 0}

    def canary_gone() -> bool:
        route = q.admin("GET", "/admin/routes/canaried").json()
        if not any(d["role"] == "canary" for d in route["deployments"]):
            return True
        raw = client.chat.completions.with_raw_response.create(model="canaried", messages=HI)
        rows = [r for r in q.ledger() if r["request_id"] == raw.headers["x-request-id"]]
        for r in rows:
            served[r["deployment"]] = served.get(r["deployment"], 0) + 1
        return False

    wait_for(canary_gone, 90, "the canary's rollback", interval=0.02)
    events = q.admin("GET", "/admin/events?kind=canary_rollback&subject=canaried").json()["data"]
    assert events, "a canary_rollback event"
    assert "quality score 0.00 vs 1.00" in events[0]["message"]
    checks = {c["metric"]: c for c in events[0]["data"]["analysis"]["checks"]}
    assert checks["quality"]["worse"] and not checks["error_rate"]["worse"]


# --- the bundled model as a judge (plumbing only) ---------------------------------------------------------


@needs_models
def test_the_bundled_smollm2_can_judge(ups: dict[str, FaultyUpstream], tmp_path: Path) -> None:
    routes = [upstream_route("chat", ups["app"], quality={"sample_rate": 1.0, "scorers": ["judge"], "judge": {
                  "route": "smollm2", "rubric": "correctness", "max_tokens": 48}}),
              {"name": "smollm2", "deployments": [{"name": "smollm2-local", "engine": {"type": "llamacpp"}}]}]
    proc = StrataProcess(tmp_path, {"routes": routes, "ledger": {"flush_interval": 0.05}}).start(ready_timeout=300)
    try:
        rid = proc.client().chat.completions.with_raw_response.create(model="chat", messages=HI).headers[
            "x-request-id"]

        def judged() -> float | None:
            return sum(proc.metric("strata_quality_samples_total", route="chat", outcome=o) or 0
                       for o in ("scored", "failed"))
        wait_for(judged, 120, "the judge's verdict")
        row = wait_for(lambda: [r for r in proc.ledger() if r["request_id"] == rid and r["role"] == "judge"], 10,
                       "the judge's ledger row")[0]
        assert (row["route"], row["deployment"], row["status"]) == ("smollm2", "smollm2-local", 200)
        assert row["completion_tokens"] > 0
        found = proc.admin("GET", f"/admin/quality/{rid}").json()
        assert all(0 <= s["value"] <= 1 and s["scorer_version"] == "correctness@1" for s in found["scores"])
    finally:
        proc.stop()


# --- config ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("quality", "message"), [
    ({"scorers": ["vibes"]}, "unknown quality scorer 'vibes'"),
    ({"scorers": ["judge"], "judge": {"route": "nowhere"}}, "quality.judge.route 'nowhere' is not a route"),
    ({"scorers": ["judge"], "judge": {"route": "other", "rubric": "tone"}}, "unknown judge rubric 'tone'"),
    ({"scorers": ["judge"]}, "set quality.judge.route"),
])
def test_a_quality_config_that_could_never_score_stops_the_start(tmp_path: Path, quality: dict[str, Any],
                                                                 message: str) -> None:
    from strata.app import create_app
    from strata.config.settings import load_settings

    def route(name: str, **more: Any) -> dict[str, Any]:
        return {"name": name, **more, "deployments": [
            {"name": f"{name}-dep", "engine": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}}]}

    with pytest.raises(ConfigError, match=message):
        create_app(load_settings(None, data_dir=tmp_path, routes=[route("a", quality=quality), route("other")]))


def test_a_route_change_to_a_quality_config_that_could_never_score_is_refused(q: StrataProcess) -> None:
    r = q.admin("PATCH", "/admin/routes/chat", json={"quality": {"scorers": ["judge", "vibes"]}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "quality", r.text
    assert "unknown quality scorer 'vibes'" in r.json()["error"]["message"]
    r = q.admin("PATCH", "/admin/routes/chat", json={"quality": {"judge": {"route": "nowhere"}}})
    assert r.status_code == 400 and "'nowhere' is not a route" in r.json()["error"]["message"]
    assert q.admin("GET", "/admin/routes/chat").json()["quality"]["scorers"] == ["judge", "refusal", "empty", "json"]


# --- units: the judge's answer, rubrics, intervals, the canary check, the store -------------------------


@pytest.mark.parametrize(("text", "scale", "expected"), [
    ('{"score": 5, "rationale": "great"}', "1-5", (1.0, "great")),
    ('Sure! ```json\n{"rationale": "meh", "score": 2}\n```', "1-5", (0.25, "meh")),
    ("Score: 3\nIt is fine.", "1-5", (0.5, "Score: 3\nIt is fine.")),
    ('{"score": 0, "rationale": "wrong"}', "0-1", (0.0, "wrong")),
])
def test_the_judges_answer_is_read_on_the_rubrics_scale(text: str, scale: str, expected: tuple) -> None:
    assert parse(text, scale) == expected


@pytest.mark.parametrize("text", ["I think it is good.", '{"score": 9}', "Score: 0"])
def test_an_answer_without_a_score_on_the_scale_fails_the_judge(text: str) -> None:
    with pytest.raises(JudgeFailed):
        parse(text, "1-5")


def test_the_newest_rubric_version_is_used_unless_one_is_pinned() -> None:
    mine = [RubricConfig(name="tone", version=v, template="{prompt} {answer}") for v in ("2", "10", "9")]
    assert find_rubric(mine, "tone", None).version == "10"
    assert find_rubric(mine, "tone", "2").version == "2"
    assert find_rubric([], "helpfulness", None).version == "1"
    with pytest.raises(ConfigError, match="tone@3"):
        find_rubric(mine, "tone", "3")


@pytest.mark.parametrize(("answer", "finish", "fmt", "expected"), [
    (REFUSAL, "stop", None, {"refusal": (0.0, "refusal"), "empty": (1.0, "complete")}),
    ("", "stop", None, {"empty": (0.0, "empty")}),
    ("", "tool_calls", None, {}),  # a tool call is an answer without text: nothing to score
    ("The answer is", "length", None, {"refusal": (1.0, "answered"), "empty": (0.0, "truncated")}),
    ('{"a": 1}', "stop", {"type": "json_object"}, {"refusal": (1.0, "answered"), "empty": (1.0, "complete"),
                                                  "json": (1.0, "valid")}),
    ('{"a": "x"}', "stop", {"type": "json_schema", "json_schema": {"name": "n", "schema": {
        "type": "object", "properties": {"a": {"type": "integer"}}}}},
     {"refusal": (1.0, "answered"), "empty": (1.0, "complete"), "json": (0.0, "invalid")}),
])
async def test_the_heuristic_scorers(answer: str, finish: str, fmt: Any, expected: dict) -> None:
    sample = Sample("r", "route", "dep", answer, "question", finish_reason=finish, response_format=fmt)
    got = {}
    for scorer in (RefusalScorer(), EmptyScorer(), JsonScorer()):
        if (score := await scorer.score(sample)) is not None:
            got[scorer.name] = (score.value, score.label)
    assert got == expected


def test_intervals() -> None:
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=0.002)
    assert t_quantile(0.975, 3) == pytest.approx(3.182, abs=0.01)
    low, high = wilson(1.0, 10, 0.95)
    assert high == 1.0 and 0.65 < low < 0.75  # ten passes out of ten: still not sure it is 100 %


def quality_window(values: list[float], n: int = 60) -> Window:
    w = Window()
    w.outcomes.extend(Outcome(0.0, True, 0.1) for _ in range(n))
    w.quality.extend((0.0, v) for v in values)
    return w


def test_the_canary_check_needs_both_a_large_and_a_significant_quality_drop() -> None:
    cfg = CanaryConfig(max_quality_drop=0.2, min_requests=30)
    good = [1.0, 0.75] * 10
    assert [c.metric for c in compare(quality_window([0.0, 0.25] * 10), quality_window(good), cfg).worse] == [
        "quality"]
    assert compare(quality_window([0.75, 0.75] * 10), quality_window(good), cfg).worse == []  # within the limit
    few = compare(quality_window([0.0] * 4), quality_window(good), cfg)
    assert few.worse == [] and "too few" in few.checks[-1].detail


def test_quality_config_needs_a_judge_for_the_judge_scorer() -> None:
    with pytest.raises(ValueError, match="judge"):
        QualityConfig(scorers=["judge"])
    assert QualityConfig(scorers=["judge"], judge=JudgeConfig(route="j")).judge is not None


def test_the_store_on_each_database(db_url: str) -> None:
    db = open_database(db_url)
    now = datetime.now(UTC)

    def row(rid: str, scorer: str, value: float, team: str, at: datetime = now, source: str = "sampled") -> dict:
        return {"at": at, "request_id": rid, "trace_id": None, "route": "r", "deployment": "d1", "team": team,
                "key_id": "k", "scorer": scorer, "scorer_version": "1", "value": value, "label": None,
                "rationale": None, "source": source}

    write(db, [row("a", "judge", 0.5, "red"), row("a", "refusal", 1.0, "red"), row("b", "judge", 1.0, "red"),
               row("c", "judge", 0.0, "blue"), row("old", "judge", 0.0, "red", now - timedelta(days=2)),
               row("b", "user", 7.0, "red", source="feedback")])
    out = {(g["scorer"], g["source"]): g for g in report(db, "24h", "r", teams={"red"})["data"]}
    assert (out[("judge", "sampled")]["n"], out[("judge", "sampled")]["mean"]) == (2, 0.75)
    assert out[("judge", "sampled")]["interval"] == "t"
    assert out[("refusal", "sampled")]["interval"] == "wilson"
    assert out[("user", "feedback")]["mean"] == 7.0
    week = {(g["scorer"], g["source"]): g["n"] for g in report(db, "7d", "r")["data"]}
    assert week[("judge", "sampled")] == 4  # every team's judge scores, the old one too
    found = request_scores(db, "a")
    assert found is not None and [s["scorer"] for s in found["scores"]] == ["judge", "refusal"]
    assert request_scores(db, "c", teams={"red"}) is None
    assert request_scores(db, "nothing") is None
    db.dispose()
