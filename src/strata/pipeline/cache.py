"""Stage ``cache``: the route's exact cache, then its semantic cache (the prompt's embedding, through the
embeddings route as an internal call); a hit is answered here, before the context is fitted or a deployment
chosen. On the way out, a served answer that missed is stored (and shared with other replicas over Redis).
"""

from __future__ import annotations

import logging

from starlette.responses import Response

from strata.gateway.cache import Entry, ExactCache, share, shared_get
from strata.gateway.semantic import SemanticCache, split, unit
from strata.pipeline.flow import Flow
from strata.pipeline.internal import embedder
from strata.pipeline.stage import Stage

log = logging.getLogger(__name__)


class Cache(Stage):
    name = "strata.cache"

    async def before(self, flow: Flow) -> Response | None:
        route = flow.route
        assert route is not None
        if not (route.cache.exact and flow.surface.cacheable):
            return None
        entry = await self._lookup(flow)
        if flow.call.span is not None:
            flow.call.span.set("strata.cache", "hit" if entry is not None else "miss")
        if entry is None:
            return None
        call = flow.call
        call.role, call.saved, call.cache_key = "cache", entry.cost, None
        call.take_usage(entry.response.get("usage"))
        return await flow.surface.cached(flow, entry)

    async def _lookup(self, flow: Flow) -> Entry | None:
        """The cached answer (exact, then semantic), or None (then the answer will be stored)."""
        state, call, route, body = flow.state, flow.call, flow.route, flow.body
        assert route is not None and body is not None and call.principal is not None
        if (flow.request.headers.get("x-strata-cache") == "bypass" or not ExactCache.cacheable(route.cache, body)
                or (body.get("n") or 1) > 1 or body.get("tools")  # it stores and replays one text choice
                or flow.retrieval is not None):  # file_search: what the caller may read is decided per caller
            state.observe.metrics.cache.labels(route.name, "bypass").inc()
            return None
        call.cache_key = ExactCache.key(route.cache, route.name, call.endpoint, call.principal, body)
        entry = state.caches.exact.get(call.cache_key)
        if entry is None and state.governance.shared.remote is not None:
            entry = await shared_get(state, route.cache, call.cache_key)
        result = "hit" if entry else "miss"
        if entry is None and route.cache.semantic:
            entry = await self._semantic(flow)
            result = "semantic_hit" if entry else "miss"
        state.observe.metrics.cache.labels(route.name, result).inc()
        if entry is None:
            call.headers = {**(call.headers or {}), "x-strata-cache": "miss"}
            if call.answer is None:
                call.answer = []  # collect a streamed answer to store it whole
        return entry

    async def _semantic(self, flow: Flow) -> Entry | None:
        state, call, route, body = flow.state, flow.call, flow.route, flow.body
        assert route is not None and body is not None
        parts = split(body)
        embed = embedder(state, route.cache.embeddings_route)
        if parts is None or embed is None or call.principal is None:
            return None
        context, text = parts
        cfg = route.cache
        p = call.principal
        space = p.team if cfg.namespace == "team" else p.key_id if cfg.namespace == "key" else ""
        key = SemanticCache.context_key(route.name, cfg.namespace, space, call.endpoint, context)
        try:
            vector = unit((await embed([text], call))[0])
        except Exception as exc:  # no embeddings right now: exact caching only
            log.warning("semantic cache of %s: embeddings unavailable: %s", route.name, exc)
            return None
        match = state.caches.semantic.lookup(key, vector, text, cfg.similarity)
        if match is None:
            call.semantic = (key, vector, text)
            return None
        call.headers = {**(call.headers or {}), "x-strata-cache-similarity": f"{match.similarity:.4f}"}
        return match.entry

    def after(self, flow: Flow) -> None:
        state, call, target = flow.state, flow.call, flow.target
        if call.status != 200 or call.cache_key is None or call.cached is None or target is None:
            return
        entry = state.caches.exact.put(target.route.cache, call.cache_key, call.cached, call.cost)
        if state.governance.shared.remote is not None:  # other replicas may serve it too
            share(state, target.route.cache, call.cache_key, entry)
        if call.semantic is not None:
            key, vector, text = call.semantic
            state.caches.semantic.put(key, vector, text, entry, target.route.cache.max_entries)
