"""The exact cache: identical requests on a route answered from memory, streamed or not.

With ``state.backend: redis`` the entries are also written to Redis (with the same TTL) and looked up there
on a local miss, so an answer made through one replica is served by all; Redis trouble only means a miss.

The key is a SHA-256 of the route, the namespace (the caller's team or key, unless the route shares its
cache), the endpoint and the request body without what does not change the answer (``stream``,
``stream_options``, ``user``). By default only deterministic requests are cached (temperature 0 or a
seed). A streamed answer is stored whole once it completed, so the next identical request, streamed or
not, gets it; a streamed hit is replayed as SSE chunks. Hits cost nothing and record what they saved.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import orjson

from strata.errors import StrataError
from strata.governance.keys import Principal
from strata.routing.config import CacheConfig

IGNORED = ("stream", "stream_options", "user")


@dataclass(slots=True)
class Entry:
    response: dict[str, Any]
    expires: float
    cost: float  # what producing it cost: saved by every hit

    def expired(self) -> bool:
        return self.expires < time.monotonic()


class ExactCache:
    def __init__(self) -> None:
        self.entries: OrderedDict[str, Entry] = OrderedDict()

    @staticmethod
    def cacheable(cfg: CacheConfig, body: dict[str, Any]) -> bool:
        if not cfg.exact:
            return False
        return not cfg.only_deterministic or body.get("temperature") == 0 or body.get("seed") is not None

    @staticmethod
    def key(cfg: CacheConfig, route: str, endpoint: str, principal: Principal, body: dict[str, Any]) -> str:
        space = principal.team if cfg.namespace == "team" else principal.key_id if cfg.namespace == "key" else ""
        material = {k: v for k, v in body.items() if k not in IGNORED}
        raw = orjson.dumps([route, cfg.namespace, space, endpoint, material], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(raw).hexdigest()

    def get(self, key: str) -> Entry | None:
        entry = self.entries.get(key)
        if entry is None:
            return None
        if entry.expired():
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        return entry

    def put(self, cfg: CacheConfig, key: str, response: dict[str, Any], cost: float,
            ttl: float | None = None) -> Entry:
        entry = self.entries[key] = Entry(response, time.monotonic() + (cfg.ttl if ttl is None else ttl), cost)
        self.entries.move_to_end(key)
        while len(self.entries) > cfg.max_entries:
            self.entries.popitem(last=False)
        return entry


def assembled(kind: str, request_id: str, model: str, text: str, finish: str | None,
              usage: dict[str, Any]) -> dict[str, Any]:
    """A whole (non-streamed) response built from a completed stream, for the cache."""
    created = int(time.time())
    if kind == "chat":
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": finish or "stop"}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "finish_reason": finish or "stop"}
        obj = "text_completion"
    return {"id": request_id, "object": obj, "created": created, "model": model, "choices": [choice],
            "usage": usage}


def replay(kind: str, response: dict[str, Any], want_usage: bool) -> list[dict[str, Any]]:
    """A cached response as the chunks of a stream: role, content, finish, and usage when asked."""
    choice = response["choices"][0]
    base = {"id": response.get("id"), "created": int(time.time()), "model": response.get("model")}
    if kind == "chat":
        obj = "chat.completion.chunk"
        content = (choice.get("message") or {}).get("content") or ""
        chunks = [{**base, "object": obj, "choices": [{"index": 0, "delta": {"role": "assistant", "content": content},
                                                        "finish_reason": None}]},
                  {**base, "object": obj, "choices": [{"index": 0, "delta": {},
                                                        "finish_reason": choice.get("finish_reason")}]}]
    else:
        obj = "text_completion"
        chunks = [{**base, "object": obj, "choices": [{"index": 0, "text": choice.get("text") or "",
                                                        "finish_reason": choice.get("finish_reason")}]}]
    if want_usage:
        chunks.append({**base, "object": obj, "choices": [], "usage": response.get("usage")})
    return chunks


def share(state: Any, cfg: CacheConfig, key: str, entry: Entry) -> None:
    """Write an entry to the shared (Redis) cache in the background."""
    ttl = entry.expires - time.monotonic()
    ttl_ms = int(ttl * 1000)
    value = orjson.dumps({"response": entry.response, "cost": entry.cost, "expires": time.time() + ttl})
    shared = state.governance.shared
    task = asyncio.create_task(_quietly(shared.run(lambda b: b.cache_put(shared.key("cache", key), value, ttl_ms))))
    state.governance.settling.add(task)
    task.add_done_callback(state.governance.settling.discard)


async def shared_get(state: Any, cfg: CacheConfig, key: str) -> Entry | None:
    """An entry another replica made, kept locally from then on; None on a miss or any Redis trouble."""
    raw = await _quietly(state.governance.shared.run(lambda b: b.cache_get(state.governance.shared.key("cache", key))))
    if not raw:
        return None
    try:
        data = orjson.loads(raw)
        left = float(data["expires"]) - time.time()  # the TTL the replica that made it gave it
        if left <= 0:
            return None
        entry: Entry = state.caches.exact.put(cfg, key, data["response"], float(data["cost"]), ttl=left)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    return entry


async def _quietly(aw: Awaitable[Any]) -> Any:
    try:
        return await aw
    except StrataError:  # fail-closed Redis: a cache miss, never a refused request
        return None
