"""The Redis backend: counters shared by every gateway replica, each check-and-update one Lua script.

Times come from Redis itself (``TIME``), so replicas with skewed clocks still agree.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from strata.state.base import BudgetItem, BudgetResult, RateItem, RateResult

RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = #KEYS
local new = {}
for i = 1, n do
  local interval = tonumber(ARGV[(i - 1) * 3 + 1])
  local burst = tonumber(ARGV[(i - 1) * 3 + 2])
  local cost = tonumber(ARGV[(i - 1) * 3 + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tat = tat + cost * interval
  if tat - now > burst then
    return {0, i - 1, tostring(tat - now - burst)}
  end
  new[i] = tat
end
local out = {1, -1, '0'}
for i = 1, n do
  local interval = tonumber(ARGV[(i - 1) * 3 + 1])
  local burst = tonumber(ARGV[(i - 1) * 3 + 2])
  redis.call('SET', KEYS[i], tostring(new[i]), 'PX', math.ceil(new[i] - now) + 1000)
  table.insert(out, math.floor((burst - (new[i] - now)) / interval))
  table.insert(out, tostring(new[i] - now))
end
return out
"""

CHARGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
for i = 1, #KEYS do
  local interval = tonumber(ARGV[(i - 1) * 2 + 1])
  local cost = tonumber(ARGV[(i - 1) * 2 + 2])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tat = tat + cost * interval
  redis.call('SET', KEYS[i], tostring(tat), 'PX', math.ceil(tat - now) + 1000)
end
return 1
"""

RESERVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local missing = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then table.insert(missing, i - 1) end
end
if #missing > 0 then return {2, missing} end
for i = 1, #KEYS do
  local holds = KEYS[i] .. ':holds'
  local expired = redis.call('ZRANGEBYSCORE', holds, '-inf', now)
  if #expired > 0 then
    local freed = 0
    for _, member in ipairs(expired) do
      freed = freed + tonumber(string.match(member, ':(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', holds, '-inf', now)
    local reserved = redis.call('HINCRBY', KEYS[i], 'reserved', -freed)
    if reserved < 0 then redis.call('HSET', KEYS[i], 'reserved', 0) end
  end
end
for i = 1, #KEYS do
  local cap = tonumber(ARGV[(i - 1) * 4 + 1])
  local amount = tonumber(ARGV[(i - 1) * 4 + 2])
  local spent = tonumber(redis.call('HGET', KEYS[i], 'spent') or 0)
  local reserved = tonumber(redis.call('HGET', KEYS[i], 'reserved') or 0)
  if spent + reserved + amount > cap then return {0, i - 1, spent, reserved} end
end
local spent = {}
for i = 1, #KEYS do
  local amount = ARGV[(i - 1) * 4 + 2]
  local holds = KEYS[i] .. ':holds'
  redis.call('HINCRBY', KEYS[i], 'reserved', amount)
  redis.call('ZADD', holds, now + tonumber(ARGV[(i - 1) * 4 + 4]), ARGV[(i - 1) * 4 + 3] .. ':' .. amount)
  local ttl = redis.call('TTL', KEYS[i])
  if ttl > 0 then redis.call('EXPIRE', holds, ttl) end
  table.insert(spent, tonumber(redis.call('HGET', KEYS[i], 'spent') or 0))
end
return {1, spent}
"""

SETTLE = """
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    table.insert(out, -1)  -- lost (Redis restarted empty): the next reservation seeds it from the ledger
  else
    local member = ARGV[(i - 1) * 3 + 1]
    if redis.call('ZREM', KEYS[i] .. ':holds', member) == 1 then  -- not released by expiry already
      local reserved = redis.call('HINCRBY', KEYS[i], 'reserved', -tonumber(ARGV[(i - 1) * 3 + 2]))
      if reserved < 0 then redis.call('HSET', KEYS[i], 'reserved', 0) end
    end
    table.insert(out, redis.call('HINCRBY', KEYS[i], 'spent', tonumber(ARGV[(i - 1) * 3 + 3])))
  end
end
return out
"""

SEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1], 'reserved', 0)
  if tonumber(ARGV[2]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
elseif tonumber(redis.call('HGET', KEYS[1], 'spent') or 0) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1])
end
return 1
"""


class RedisBackend:
    def __init__(self, url: str, timeout: float) -> None:
        self.client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout,
                                              health_check_interval=0)
        self._rate = self.client.register_script(RATE)
        self._charge = self.client.register_script(CHARGE)
        self._reserve = self.client.register_script(RESERVE)
        self._settle = self.client.register_script(SETTLE)
        self._seed = self.client.register_script(SEED)

    async def rate(self, items: list[RateItem]) -> RateResult:
        return self._rate_result(await self._rate(keys=[it.key for it in items], args=_rate_args(items)))

    async def admit(self, rate: list[RateItem], budget: list[BudgetItem],
                    ttl_s: list[int]) -> tuple[RateResult, BudgetResult | None]:
        async with self.client.pipeline(transaction=False) as pipe:
            await self._rate(keys=[it.key for it in rate], args=_rate_args(rate), client=pipe)
            await self._reserve(keys=[it.key for it in budget], args=_budget_args(budget), client=pipe)
            rate_out, budget_out = await pipe.execute()
        return self._rate_result(rate_out), self._budget_result(budget_out)

    async def finish(self, charge: list[RateItem], items: list[BudgetItem], actual: list[int]) -> list[int]:
        if not charge:
            return await self.settle(items, actual)
        async with self.client.pipeline(transaction=False) as pipe:
            await self._charge(keys=[it.key for it in charge], args=_charge_args(charge), client=pipe)
            await self._settle(keys=[it.key for it in items], args=_settle_args(items, actual), client=pipe)
            _, out = await pipe.execute()
        return [int(v) for v in out]

    @staticmethod
    def _rate_result(out: list[Any]) -> RateResult:
        if int(out[0]) == 0:
            return RateResult(False, int(out[1]), float(out[2]))
        rest = out[3:]
        return RateResult(True, remaining=[int(v) for v in rest[0::2]], reset_ms=[float(v) for v in rest[1::2]])

    async def charge(self, items: list[RateItem]) -> None:
        await self._charge(keys=[it.key for it in items], args=_charge_args(items))

    async def reserve(self, items: list[BudgetItem], ttl_s: list[int]) -> BudgetResult:
        return self._budget_result(await self._reserve(keys=[it.key for it in items], args=_budget_args(items)))

    @staticmethod
    def _budget_result(out: list[Any]) -> BudgetResult:
        status = int(out[0])
        if status == 2:
            return BudgetResult(False, missing=[int(i) for i in out[1]])
        if status == 0:
            return BudgetResult(False, int(out[1]), spent=[int(out[2])], reserved=[int(out[3])])
        return BudgetResult(True, spent=[int(v) for v in out[1]])

    async def settle(self, items: list[BudgetItem], actual: list[int]) -> list[int]:
        return [int(v) for v in await self._settle(keys=[it.key for it in items], args=_settle_args(items, actual))]

    async def seed(self, key: str, spent: int, ttl_s: int) -> None:
        await self._seed(keys=[key], args=[spent, ttl_s])

    async def flag(self, key: str, ttl_s: int) -> bool:
        return bool(await self.client.set(key, 1, nx=True, ex=ttl_s))

    async def cache_get(self, key: str) -> bytes | None:
        value: bytes | None = await self.client.get(key)
        return value

    async def cache_put(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self.client.set(key, value, px=max(ttl_ms, 1))

    async def ping(self) -> None:
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()


def _rate_args(items: list[RateItem]) -> list[Any]:
    return [v for it in items for v in (it.interval_ms, it.burst_ms, it.cost)]


def _charge_args(items: list[RateItem]) -> list[Any]:
    return [v for it in items for v in (it.interval_ms, it.cost)]


def _budget_args(items: list[BudgetItem]) -> list[Any]:
    return [v for it in items for v in (it.cap, it.amount, it.hold, it.hold_ms)]


def _settle_args(items: list[BudgetItem], actual: list[int]) -> list[Any]:
    return [v for it, act in zip(items, actual, strict=True) for v in (f"{it.hold}:{it.amount}", it.amount, act)]
