"""Sampling served answers for quality, off the request path.

The ``quality`` stage draws the sample when the request reaches it (``pick``: one random draw, and the
answer's text is then collected) and hands it over on the way out (``submit``), after the ledger row is
recorded: for a JSON answer just before its bytes go out, for a stream just before its last event. Scoring
runs in a background task, bounded per route (``max_concurrency``; a sample over the bound is dropped and
counted as ``skipped_busy``), under a deadline (``timeout``), so a slow or stalled judge never holds a client.

Each score is a ``quality_scores`` row (source ``sampled``), an observation of ``strata_quality_score``, and a
late span ``quality <route>`` of the request's trace (parented by the request's root span, exported with
the other spans). The judge's own call is an internal call (role ``judge``) under that span. The mean score
of a sample served by a canary or a primary goes to the canary analysis.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from strata.errors import ConfigError
from strata.observe.quality.config import QualityConfig, QualitySettings
from strata.observe.quality.scorers import Registry, Sample, Score, Scorer, ScorerContext
from strata.observe.quality.store import write
from strata.observe.trace_store import LATE
from strata.observe.tracing import Trace

if TYPE_CHECKING:
    from strata.gateway.state import AppState
    from strata.pipeline.flow import Flow
    from strata.routing.config import RouteConfig

log = logging.getLogger(__name__)


class QualitySampler:
    def __init__(self, state: AppState, settings: QualitySettings, registry: Registry | None = None,
                 draw: Any = random.random) -> None:
        self.state = state
        self.settings = settings
        self.registry = registry or Registry()
        self.draw = draw
        self.running: dict[str, int] = {}

    def check(self, routes: list[RouteConfig]) -> None:
        """Refuse at startup a route's quality config that could never score: an unknown scorer, a judge
        route that does not exist, an unknown rubric."""
        names = {r.name for r in routes}
        for route in routes:
            cfg = route.quality
            if cfg is None:
                continue
            self.registry.check(route.name, cfg)
            if cfg.judge is not None:
                if cfg.judge.route not in names:
                    raise ConfigError(f"route {route.name!r}: quality.judge.route {cfg.judge.route!r} is not a route")
                if cfg.judge.route == route.name:
                    raise ConfigError(f"route {route.name!r}: quality.judge.route must be another route")
                from strata.observe.quality.judge import find_rubric

                find_rubric(self.settings.rubrics, cfg.judge.rubric, cfg.judge.rubric_version)

    # -- on the request path ----------------------------------------------------------------------------

    def pick(self, flow: Flow, cfg: QualityConfig) -> bool:
        return flow.surface.kind != "embeddings" and cfg.sample_rate > 0 and self.draw() < cfg.sample_rate

    def submit(self, flow: Flow) -> None:
        """Start scoring a picked answer, unless the route's scoring is at its bound (then count it)."""
        call, route = flow.call, flow.route
        if route is None or route.quality is None or call.status != 200 or call.answer is None:
            return
        metrics = self.state.observe.metrics
        if self.running.get(route.name, 0) >= route.quality.max_concurrency:
            metrics.quality_samples.labels(route.name, "skipped_busy").inc()
            return
        sample = _sample(flow)
        late = _late_trace(flow, sample)
        self.running[route.name] = self.running.get(route.name, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run(route.quality, sample, late, flow),
                                                      name=f"quality-{call.request_id}")
        self.state.tasks.background.add(task)
        task.add_done_callback(self.state.tasks.background.discard)

    # -- in the background ------------------------------------------------------------------------------

    async def _run(self, cfg: QualityConfig, sample: Sample, late: Trace | None, flow: Flow) -> None:
        metrics = self.state.observe.metrics
        try:
            scored, failed = await self.score(cfg, sample, late, flow)
            rows = [_row(sample, scorer, score) for scorer, score in scored]
            await asyncio.to_thread(write, self.state.db, rows)
            for scorer, score in scored:
                metrics.quality_score.labels(sample.route, sample.deployment or "-", scorer.name).observe(score.value)
            if scored and sample.role is not None:
                mean = sum(s.value for _, s in scored) / len(scored)
                self.state.routing.rollouts.quality(sample.route, sample.role, mean)
            metrics.quality_samples.labels(sample.route, "failed" if failed else "scored").inc()
            if late is not None:
                _close(late, scored, failed)
                self.state.observe.tracer.finish(late)
        except Exception:  # scoring must never take anything down with it
            log.exception("quality: scoring request %s failed", sample.request_id)
            metrics.quality_samples.labels(sample.route, "failed").inc()
        finally:
            self.running[sample.route] -= 1

    async def score(self, cfg: QualityConfig, sample: Sample, late: Trace | None,
                    flow: Flow | None = None) -> tuple[list[tuple[Scorer, Score]], bool]:
        """Every configured scorer on the sample, under one deadline; (scores, whether any scorer failed)."""
        ctx = ScorerContext(cfg, self.settings.rubrics, self._judge_call(cfg, late, flow))
        scored: list[tuple[Scorer, Score]] = []
        failed = False
        deadline = asyncio.get_running_loop().time() + cfg.timeout
        for name in cfg.scorers:
            try:
                scorer = self.registry.build(name, ctx)
                async with asyncio.timeout_at(deadline):
                    score = await scorer.score(sample)
            except Exception as exc:
                failed = True
                log.warning("quality: scorer %s on request %s failed: %s", name, sample.request_id,
                            f"no score within {cfg.timeout:g}s" if isinstance(exc, TimeoutError) else exc)
                continue
            if score is not None:
                scored.append((scorer, Score(min(1.0, max(0.0, score.value)), score.label, score.rationale)))
        return scored, failed

    def _judge_call(self, cfg: QualityConfig, late: Trace | None, flow: Flow | None) -> Any:
        if cfg.judge is None:
            return None
        route_name = cfg.judge.route

        async def judge(body: dict[str, Any], sample: Sample) -> dict[str, Any]:
            from strata.pipeline.internal import internal
            from strata.pipeline.record import CallRecord

            parent = CallRecord(sample.request_id, "chat", route=sample.route)
            if flow is not None:
                served = flow.call
                parent.principal, parent.user, parent.tags = served.principal, served.user, served.tags
            if late is not None:
                parent.trace, parent.span = late, late.root
            return await internal(self.state, parent, route_name, "judge", "chat", body,
                                  lambda t: t.engine.generate("chat", body))

        return judge


def _sample(flow: Flow) -> Sample:
    call, body = flow.call, flow.body or {}
    messages = body.get("messages")
    if isinstance(messages, list):
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        content = users[-1].get("content") if users else ""
        prompt = content if isinstance(content, str) else str(content or "")
    else:
        prompt = str(body.get("prompt") or "")
    p = call.principal
    return Sample(request_id=call.request_id, route=call.route or "-", deployment=call.deployment,
                  answer=call.answer_text or "", prompt=prompt,
                  messages=messages if isinstance(messages, list) else None,
                  finish_reason=call.finish, response_format=body.get("response_format"), role=call.role,
                  trace_id=call.trace.hex_id if call.trace is not None else None,
                  team=p.team if p else None, key_id=p.key_id if p else None)


def _late_trace(flow: Flow, sample: Sample) -> Trace | None:
    """A trace of one span, ``quality <route>``: the request's trace id, the request's root span as parent."""
    call = flow.call
    if call.trace is None or flow.root is None:
        return None
    late = Trace(call.trace.trace_id, flow.root.span_id, call.request_id)
    span = late.start(f"{LATE}{sample.route}", None, attrs={
        "strata.request_id": sample.request_id, "strata.route": sample.route, "strata.quality.sampled": True})
    span.set("strata.deployment", sample.deployment)
    span.set("strata.team", sample.team)
    return late


def _close(late: Trace, scored: list[tuple[Scorer, Score]], failed: bool) -> None:
    span = late.root
    for scorer, score in scored:
        span.set(f"strata.quality.{scorer.name}", score.value)
        span.set(f"strata.quality.{scorer.name}.label", score.label)
        span.set(f"strata.quality.{scorer.name}.version", scorer.version)
    span.end("a scorer failed" if failed else None)


def _row(sample: Sample, scorer: Scorer, score: Score) -> dict[str, Any]:
    return {"at": datetime.now(UTC), "request_id": sample.request_id, "trace_id": sample.trace_id,
            "route": sample.route, "deployment": sample.deployment, "team": sample.team, "key_id": sample.key_id,
            "scorer": scorer.name, "scorer_version": scorer.version, "value": score.value, "label": score.label,
            "rationale": score.rationale[:2000] if score.rationale else None, "source": "sampled"}
