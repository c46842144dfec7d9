"""The Limiter shared by every gateway replica: one Lua script checks all of a request's windows and
charges them only if every one has room (reserve), another adds actual − estimate (settle). If Redis
is unreachable it fails open with a logged warning, so requests keep flowing."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from observability.limits import (
    LimitsConfig,
    LimitUsage,
    exceeded,
    plan_charges,
    settle_deltas,
    usage_from,
    usd_headroom,
)
from observability.limits_protocol import Reservation

log = logging.getLogger(__name__)

# KEYS: window counters; ARGV: (amount, limit, ttl) per key. Returns {index of the first window
# that would overflow, what that window had used}, or {0, 0, what each window had used} once all
# are charged (the caller derives the budget headroom from them).
_RESERVE_LUA = """
local used = {}
for i = 1, #KEYS do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if used[i] + tonumber(ARGV[3 * i - 2]) > tonumber(ARGV[3 * i - 1]) then return {i, used[i]} end
end
local out = {0, 0}
for i = 1, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
  redis.call('EXPIRE', KEYS[i], ARGV[3 * i])
  out[i + 2] = used[i]
end
return out
"""
# KEYS: window counters; ARGV: delta per key. A window that has already expired stays gone.
_SETTLE_LUA = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCRBY', KEYS[i], ARGV[i]) end
end
return 1
"""
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)
_WINDOW_SLACK_S = 3600  # counters outlive their window a little, so a late settle still lands


class RedisLimiter:
    def __init__(self, client: aioredis.Redis, config: LimitsConfig, *, prefix: str = "hgw:lim:",
                 clock: Callable[[], float] = time.time, warn_interval_s: float = 30.0) -> None:
        self.config = config  # replace to apply a reloaded policy
        self._client = client
        self._prefix = prefix
        self._clock = clock
        self._reserve = client.register_script(_RESERVE_LUA)
        self._settle = client.register_script(_SETTLE_LUA)
        self._warn_interval_s = warn_interval_s
        self._last_warning = -math.inf

    @classmethod
    def from_url(cls, url: str, config: LimitsConfig, *, max_connections: int = 64,
                 **kwargs: object) -> RedisLimiter:
        # A blocking pool: a burst of requests queues for a connection (for at most `timeout`)
        # instead of failing open the moment the pool is exhausted. The socket timeouts run on the
        # gateway's event loop, so they also measure its lag: at 0.5 s a busy loop under a burst
        # timed out on a healthy Redis (whose script had charged the window) and let requests past
        # the limit. A dead Redis refuses connections at once; these bound a hung one.
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=2.0,
                                                        socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(aioredis.Redis(connection_pool=pool), config, **kwargs)  # type: ignore[arg-type]

    async def reserve(self, request_id: str, team: str, key_id: str, tokens: int, cost_usd: float,
                      *, budgets: bool = True) -> Reservation:
        now = self._clock()
        charges = plan_charges(self.config, team, key_id, tokens, cost_usd, now, budgets)
        if not charges:
            return Reservation(request_id, team, key_id, tokens, cost_usd)
        args: list[int] = []
        for charge in charges:
            args += [charge.amount, charge.limit, math.ceil(charge.window_end - now) + _WINDOW_SLACK_S]
        try:
            index, used, *used_each = await self._reserve(keys=[self._prefix + c.key for c in charges], args=args)
        except _DOWN as exc:
            self._warn(f"limits not enforced, Redis unreachable: {exc!r}")
            return Reservation(request_id, team, key_id, tokens, cost_usd)  # no windows: settle is a no-op
        if index:
            raise exceeded(charges[index - 1], int(used), now)
        return Reservation(request_id, team, key_id, tokens, cost_usd, tuple(c.key for c in charges),
                           usd_headroom(charges, [int(u) for u in used_each]))

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        deltas = settle_deltas(reservation, tokens, cost_usd)
        if not deltas:
            return
        try:
            await self._settle(keys=[self._prefix + k for k, _ in deltas], args=[d for _, d in deltas])
        except _DOWN as exc:
            self._warn(f"settle of {reservation.request_id} lost, Redis unreachable: {exc!r}")

    async def usage(self, team: str, key_id: str) -> list[LimitUsage]:
        """What each of the team's and key's windows has used now (for budget-aware routing)."""
        charges = plan_charges(self.config, team, key_id, 0, 0.0, self._clock())
        if not charges:
            return []
        try:
            raw = await self._client.mget([self._prefix + c.key for c in charges])
        except _DOWN as exc:
            self._warn(f"limit usage unknown, Redis unreachable: {exc!r}")
            raw = [None] * len(charges)
        return usage_from(charges, [int(v) if v is not None else 0 for v in raw])

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= self._warn_interval_s:
            self._last_warning = now
            log.warning(message)

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._client.connection_pool.disconnect()
