"""The drift monitor: samples live requests (after their response), embeds and stores them in the background,
and checks each route periodically.

Two control loops (``strata.app.loops``): ``drift-samples`` embeds waiting observations in batches through the
embeddings route (``embed``: ``strata.pipeline.internal``, ledger role ``drift``) and writes them;
``drift-check`` builds one report per route, stores it, sets the ``strata_drift_*`` gauges and emits a
``drift_detected`` operator event when a route goes from no drift to drift (once per onset; the stored report
remembers it across restarts). Nothing here runs on a request's path but ``wants`` and ``offer`` (a coin flip
and an append to a bounded list).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from strata.app.loops import Loop
from strata.observe.drift.config import DriftSettings
from strata.observe.drift.features import Observation
from strata.observe.drift.report import build_report
from strata.observe.drift.store import DriftStore, pack
from strata.observe.metrics import Metrics

log = logging.getLogger(__name__)

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]
Emit = Callable[[str, str, str, dict[str, Any]], object]
Clock = Callable[[], datetime]
# answered(route, role, answer embedding or None, answer tokens, refusal): an embedded observation, handed to the
# canary analysis (``Rollouts.answer``) so a canary's answers are compared with the primaries' as they arrive
Answered = Callable[[str, str, list[float] | None, int, bool], None]


def utc_now() -> datetime:
    return datetime.now(UTC)


class DriftMonitor:
    def __init__(self, cfg: DriftSettings, store: DriftStore, metrics: Metrics, emit: Emit, embed: Embed | None,
                 *, clock: Clock = utc_now,
                 coin: Callable[[], float] = random.random) -> None:
        self.cfg = cfg
        self.store = store
        self.metrics = metrics
        self.emit = emit
        self.embed = embed
        self.clock = clock
        self.coin = coin
        self.answered: Answered | None = None  # set by the composition root (the canary analysis)
        self.pending: list[Observation] = []
        self.retrieved: list[tuple[str, float, list[float]]] = []

    # -- on the request path: cheap ------------------------------------------------------------------------
    def wants(self, route: str | None) -> bool:
        """Sample this request? (a coin flip, for the routes drift watches)."""
        return (route is not None and self.cfg.sample_rate > 0 and self.coin() < self.cfg.sample_rate
                and (self.cfg.routes is None or route in self.cfg.routes))

    def offer(self, obs: Observation) -> None:
        if len(self.pending) >= self.cfg.queue:
            self.metrics.drift_samples.labels(obs.route, "dropped_busy").inc()
            return
        self.pending.append(obs)

    def record_retrieved(self, route: str, embeddings: list[list[float]]) -> None:
        """Hook for retrieval (RAG): the embeddings of the chunks retrieved for a request on ``route``, stored
        as ``retrieved`` observations and compared like prompt embeddings (signal ``retrieved_embedding``)."""
        at = self.clock().timestamp()
        room = self.cfg.queue - len(self.retrieved)
        if room < len(embeddings):
            self.metrics.drift_samples.labels(route, "dropped_busy").inc(len(embeddings) - max(room, 0))
        self.retrieved.extend((route, at, list(e)) for e in embeddings[:max(room, 0)])

    # -- background ----------------------------------------------------------------------------------------
    def loops(self) -> list[Loop]:
        return [Loop("drift-samples", self.flush, self.cfg.flush_interval),
                Loop("drift-check", self.check, self.cfg.interval, delay_first=True)]

    async def flush(self) -> int:
        """Embed and write what is waiting (at most 8 batches a pass); returns the observations written."""
        written = 0
        for _ in range(8):
            batch, self.pending = self.pending[:self.cfg.batch_size], self.pending[self.cfg.batch_size:]
            retrieved, self.retrieved = self.retrieved, []
            if not batch and not retrieved:
                break
            rows = await self._rows(batch) + [_retrieved_row(r) for r in retrieved]
            await asyncio.to_thread(self.store.add, rows)
            written += len(rows)
        return written

    async def _rows(self, batch: list[Observation]) -> list[dict[str, Any]]:
        if not batch:
            return []
        vectors: list[list[float]] | None = None
        if self.embed is not None:
            cut = self.cfg.max_text_chars
            texts = [o.prompt[:cut] or " " for o in batch] + [o.answer[:cut] or " " for o in batch]
            try:
                vectors = await self.embed(texts)
            except Exception as exc:  # the scalars are still worth keeping
                log.warning("drift: embedding %d observations failed (%s); stored without embeddings",
                            len(batch), exc)
        rows = []
        for i, o in enumerate(batch):
            outcome = "sampled" if vectors is not None or self.embed is None else "embedding_failed"
            self.metrics.drift_samples.labels(o.route, outcome).inc()
            if self.answered is not None and o.role is not None:
                self.answered(o.route, o.role, vectors[len(batch) + i] if vectors else None, o.answer_tokens,
                              o.refusal)
            rows.append({
                "at": datetime.fromtimestamp(o.at, UTC), "route": o.route, "kind": "request",
                "deployment": o.deployment, "prompt_tokens": o.prompt_tokens, "answer_tokens": o.answer_tokens,
                "refusal": o.refusal, "tool_call": o.tool_call, "language": o.language,
                "prompt_vec": pack(vectors[i]) if vectors else None,
                "answer_vec": pack(vectors[len(batch) + i]) if vectors else None, "retrieved_vec": None})
        return rows

    async def check(self) -> list[dict[str, Any]]:
        """One report per watched route; metrics, the stored report, and an event on a new onset."""
        now = self.clock()
        active = await asyncio.to_thread(self.store.detected_routes)  # shared by replicas: one event per onset
        reports = []
        routes = self.cfg.routes if self.cfg.routes is not None else await asyncio.to_thread(self.store.routes)
        for route in routes:
            try:
                report = await asyncio.to_thread(build_report, self.cfg, self.store, route, now)
            except Exception:
                self.metrics.drift_checks.labels(route, "failed").inc()
                log.exception("drift: the check of route %s failed", route)
                continue
            was = route in active
            episode = report["status"] == "drift" or (report["status"] == "insufficient_data" and was)
            await asyncio.to_thread(self.store.save_report, route, report, episode)
            self._publish(report)
            await self._onset(report, was)
            reports.append(report)
        purged = await asyncio.to_thread(self.store.purge, now - timedelta(days=self.cfg.retention_days))
        if purged:
            log.info("drift: %d observations older than %g days deleted", purged, self.cfg.retention_days)
        return reports

    def _publish(self, report: dict[str, Any]) -> None:
        m, route = self.metrics, report["route"]
        m.drift_checks.labels(route, report["status"]).inc()
        for s in report["signals"]:
            m.drift_statistic.labels(route, s["signal"]).set(s["statistic"])
            m.drift_p_value.labels(route, s["signal"]).set(s["p_adjusted"])
            m.drift_detected.labels(route, s["signal"]).set(1 if s["detected"] else 0)
        for s in report["untested"]:
            for gauge in (m.drift_statistic, m.drift_p_value, m.drift_detected):
                try:
                    gauge.remove(route, s["signal"])
                except KeyError:
                    pass

    async def _onset(self, report: dict[str, Any], was: bool) -> None:
        """The ``drift_detected`` event when drift starts; a report without drift ends the episode (a report
        with too few observations changes nothing)."""
        route = report["route"]
        if report["status"] == "drift" and not was:
            flagged = [s for s in report["signals"] if s["detected"]]
            parts = ", ".join(f"{s['signal']} (effect {s['statistic']:.3g}, p {s['p_adjusted']:.2g})"
                              for s in flagged)
            message = f"drift on route {route}: {parts}; reference {report['reference']['kind']}"
            data = {"signals": flagged, "reference": report["reference"], "current": report["current"]}
            await asyncio.to_thread(self.emit, "drift_detected", route, message, data)
        elif report["status"] == "ok" and was:
            log.info("drift on route %s is over", route)


def _retrieved_row(item: tuple[str, float, list[float]]) -> dict[str, Any]:
    route, at, vector = item
    return {"at": datetime.fromtimestamp(at, UTC), "route": route, "kind": "retrieved", "deployment": None,
            "prompt_tokens": None, "answer_tokens": None, "refusal": None, "tool_call": None, "language": None,
            "prompt_vec": None, "answer_vec": None, "retrieved_vec": pack(vector)}
