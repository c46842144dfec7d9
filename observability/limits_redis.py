"""The Limiter shared by every gateway replica: one Lua script checks all of a request's windows and
charges them only if every one has room (reserve), another adds actual − estimate (settle). Far from
a limit a reservation also leases a little quota, and the next ones are served from it without a
round trip (limit_leases.py); near a limit every one goes to Redis. The windows a reservation reports
(x-ratelimit-remaining-*) are this replica's view: exact as of its last round trip, less its own
requests since; other replicas' unspent leases count as used, their requests since are not seen. If Redis is unreachable or refuses
(OOM, READONLY after a failover, BUSY, LOADING, MASTERDOWN, too many open files) it fails open with a
logged warning, so requests keep flowing. Any other error reply (a Lua error, WRONGTYPE on a window
key) is a bug: it fails open too, but is logged as an error once per script, counted apart in
/metrics and shown in /readyz (LimiterHealth).

Counters are named `hgw:lim:{team}:<window key>`: the tag keeps a request's windows (its team's and
its key's) in one Redis Cluster slot. On one server, a counter still under its name from before the
tags (`hgw:lim:<window key>`) is renamed by the first reservation that touches it."""
from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Collection

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, OutOfMemoryError, ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from observability.limit_leases import LeaseBook
from observability.limiter_health import LimiterHealth, LimiterState
from observability.limits import (
    Charge,
    exceeded,
    plan_charges,
    raise_if_exceeded,
    request_charges,
    settle_deltas,
    usage_from,
    window_states,
)
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import LimitUsage, Reservation
from observability.redis_clients import CLUSTER_DOWN, async_client, is_cluster_client, team_tag

log = logging.getLogger(__name__)

# KEYS: window counters; ARGV: (amount, limit, ttl, lease wanted, margin) per key. Returns {index of
# the first window that would overflow, what that window had used}, or, once all are charged,
# {0, 0, then per window: what it had used, the lease granted}. A lease is granted only out of room
# beyond the margin below the limit. A charge of nothing never overflows (a $0 request over budget).
# On one server KEYS also hold each window's name from before the hash tags (moved on first touch).
_RESERVE_LUA = """
local n = #ARGV / 5
if #KEYS > n then
  for i = 1, n do
    if redis.call('EXISTS', KEYS[i]) == 0 and redis.call('EXISTS', KEYS[n + i]) == 1 then
      redis.call('RENAME', KEYS[n + i], KEYS[i])
    end
  end
end
local used = {}
for i = 1, n do
  used[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  local amount = tonumber(ARGV[5 * i - 4])
  if amount > 0 and used[i] + amount > tonumber(ARGV[5 * i - 3]) then return {i, used[i]} end
end
local out = {0, 0}
for i = 1, n do
  local amount = tonumber(ARGV[5 * i - 4])
  local lease = math.min(tonumber(ARGV[5 * i - 1]), tonumber(ARGV[5 * i - 3]) - tonumber(ARGV[5 * i]) - used[i] - amount)
  if lease < 0 then lease = 0 end
  redis.call('INCRBY', KEYS[i], string.format('%d', amount + lease))
  redis.call('EXPIRE', KEYS[i], ARGV[5 * i - 2])
  out[2 * i + 1] = used[i]
  out[2 * i + 2] = lease
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
# Every Redis failure fails open (a 500 for each request because Redis is unwell, or a key holds the
# wrong type, is worse); is_outage() tells an outage (warned about) from a bug (an error, counted).
_FAILED = (RedisError, OSError, *CLUSTER_DOWN)  # a cluster error need not be a RedisError
# Replies that mean "Redis cannot serve now" rather than "the script is wrong" (redis-py maps OOM,
# READONLY and MASTERDOWN to classes and LOADING to a ConnectionError; BUSY stays a plain reply).
_OUTAGE_REPLIES = ("BUSY", "OOM", "READONLY", "LOADING", "MASTERDOWN")
_OUTAGES = (RedisConnectionError, RedisTimeoutError, OSError, OutOfMemoryError, ReadOnlyError, MasterDownError,
            *CLUSTER_DOWN)  # CLUSTERDOWN, a node gone, slots moving


def is_outage(exc: BaseException) -> bool:
    """Unreachable (connection, timeout, OS error) or refusing as an unwell server does (OOM, READONLY
    after a failover, BUSY with a long script, LOADING, MASTERDOWN)."""
    if isinstance(exc, _OUTAGES):
        return True
    return isinstance(exc, ResponseError) and str(exc).split(" ", 1)[0] in _OUTAGE_REPLIES


_WINDOW_SLACK_S = 3600  # counters outlive their window a little, so a late settle still lands


class RedisLimiter:
    def __init__(self, client: aioredis.Redis | RedisCluster, config: LimitsConfig, *, prefix: str = "hgw:lim:",
                 clock: Callable[[], float] = time.time, warn_interval_s: float = 30.0,
                 lease_quota: bool = True) -> None:
        self.config = config  # reconfigure() applies a reloaded policy
        self._client = client
        self._prefix = prefix
        # one server may hold counters under their untagged names (a deployment from before the tags)
        self._legacy_names = not is_cluster_client(client)
        self._clock = clock
        self._reserve = client.register_script(_RESERVE_LUA)
        self._settle = client.register_script(_SETTLE_LUA)
        self._warn_interval_s = warn_interval_s
        self._last_warning = -math.inf
        self._leases = LeaseBook() if lease_quota else LeaseBook(lease_divisor=0)
        self._returns: set[asyncio.Task[None]] = set()
        self.health = LimiterHealth()

    @classmethod
    def from_url(cls, url: str, config: LimitsConfig, *, max_connections: int = 64,
                 **kwargs: object) -> RedisLimiter:
        # A blocking pool: a burst of requests queues for a connection (for at most `timeout`)
        # instead of failing open the moment the pool is exhausted. The socket timeouts run on the
        # gateway's event loop, so they also measure its lag: at 0.5 s a busy loop under a burst
        # timed out on a healthy Redis (whose script had charged the window) and let requests past
        # the limit. A dead Redis refuses connections at once; these bound a hung one.
        client = async_client(url, max_connections=max_connections, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, config, **kwargs)  # type: ignore[arg-type]

    async def reserve(self, request_id: str, team: str, key_id: str, tokens: int, cost_usd: float,
                      *, unchecked: Collection[str] = (), key_limits: TeamLimits | None = None) -> Reservation:
        now = self._clock()
        charges = _tagged(team, plan_charges(self.config, team, key_id, tokens, cost_usd, now, unchecked,
                                             key_limits))
        if not charges:
            return Reservation(request_id, team, key_id, tokens, cost_usd)
        leases = self._leases
        if leases.take_local(charges):  # no await between the check and the spend: atomic here
            return Reservation(request_id, team, key_id, tokens, cost_usd, tuple(c.key for c in charges),
                               leases.headroom(charges), window_states(charges, leases.seen_used(charges), now))
        leases.sweep(now)
        taken, asks = leases.begin_slow(charges)
        args: list[int] = []
        for charge, ask in zip(charges, asks):
            args += [ask.amount, charge.limit, math.ceil(charge.window_end - now) + _WINDOW_SLACK_S,
                     ask.grant_max, ask.margin]
        try:
            index, used, *each = await self._reserve(keys=self._names(charges, self._legacy_names), args=args)
        except _FAILED as exc:
            self._failed("reserve", exc, "limits not enforced, Redis unreachable or refusing")
            leases.put_back(charges, asks, taken)
            return Reservation(request_id, team, key_id, tokens, cost_usd)  # no windows: settle is a no-op
        except BaseException:  # cancelled (or an error no one foresaw): nothing was charged
            leases.put_back(charges, asks, taken)
            raise
        self.health.ok()
        if index:
            await self._add(leases.refund(charges, asks, taken), "refund of a refused reservation")
            raise exceeded(charges[index - 1], int(used) - taken[index - 1], now)  # our leftover was not used
        used_each, granted = [int(u) for u in each[0::2]], [int(g) for g in each[1::2]]
        leases.finish_slow(charges, asks, used_each, granted)
        return Reservation(request_id, team, key_id, tokens, cost_usd, tuple(c.key for c in charges),
                           leases.headroom(charges, [u - t for u, t in zip(used_each, taken)]),
                           window_states(charges, leases.seen_used(charges), now))

    async def check_requests(self, team: str, key_id: str, *, key_limits: TeamLimits | None = None) -> None:
        now = self._clock()
        charges = [c for c in _tagged(team, request_charges(self.config, team, key_id, now, key_limits))
                   if not self._leases.unspent(c.key)]
        if not charges:  # no rpm limit, or this replica's leases pay for one more request: no round trip
            return
        try:
            raw = await self._client.mget(self._names(charges, self._legacy_names))
        except _FAILED as exc:
            self._failed("check_requests", exc, "requests-per-minute pre-check skipped, Redis unreachable")
            return  # reserve() decides
        used = _used(raw, len(charges))
        raise_if_exceeded(charges, used, now)  # the same test reserve's script makes, without charging

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        leases = self._leases
        deltas = [(k, d) for k, d in settle_deltas(reservation, tokens, cost_usd) if not leases.absorb(k, d)]
        await self._add(deltas, f"settle of {reservation.request_id}")

    async def _add(self, deltas: list[tuple[str, int]], what: str) -> None:
        if not deltas:
            return
        try:
            await self._settle(keys=[self._prefix + k for k, _ in deltas], args=[d for _, d in deltas])
        except _FAILED as exc:
            self._failed("settle", exc, f"{what} lost, Redis unreachable")

    def reconfigure(self, config: LimitsConfig) -> None:
        """New limits for the next reservations; leases sized by the old ones go back to Redis."""
        self.config = config
        unspent = self._leases.drain(self._clock())
        if not unspent:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop to return them from: they lapse with their windows
            return
        task = loop.create_task(self._add_each_team(unspent, "return of leases after a policy reload"))
        self._returns.add(task)
        task.add_done_callback(self._returns.discard)

    async def usage(self, team: str, key_id: str, key_limits: TeamLimits | None = None) -> list[LimitUsage]:
        """What each of the team's and key's windows has used now (for budget-aware routing)."""
        charges = _tagged(team, plan_charges(self.config, team, key_id, 0, 0.0, self._clock(), key_limits=key_limits))
        if not charges:
            return []
        try:
            raw = await self._client.mget(self._names(charges, self._legacy_names))
        except _FAILED as exc:
            self._failed("usage", exc, "limit usage unknown, Redis unreachable")
            raw = [None] * len(charges)
        # what this replica leased but has not spent is not used yet
        return usage_from(charges, [max(u - self._leases.unspent(c.key), 0)
                                    for c, u in zip(charges, _used(raw, len(charges)))])

    def _names(self, charges: list[Charge], legacy: bool = False) -> list[str]:
        """The counters' Redis keys; with legacy, then the same windows' untagged names."""
        names = [self._prefix + c.key for c in charges]
        return names + [self._prefix + c.key.partition(":")[2] for c in charges] if legacy else names

    async def _add_each_team(self, deltas: list[tuple[str, int]], what: str) -> None:
        """_add for deltas of many teams: one script per team (per cluster slot)."""
        teams: dict[str, list[tuple[str, int]]] = {}
        for key, delta in deltas:
            teams.setdefault(key.partition(":")[0], []).append((key, delta))
        for part in teams.values():
            await self._add(part, what)

    def state(self) -> LimiterState:
        return self.health.state()

    def _failed(self, script: str, exc: BaseException, outage_message: str) -> None:
        """Fail open: an outage is warned about at a bounded rate; any other error reply is a bug,
        logged as an error the first time each script meets one (then only counted)."""
        outage = is_outage(exc)
        if self.health.failed(script, exc, outage=outage):
            log.error("limiter script %r failed with an error reply (a bug, not an outage); limits are not "
                      "enforced while it fails (counted in /metrics, shown in /readyz): %s: %s",
                      script, type(exc).__name__, exc)
        elif outage:
            self._warn(f"{outage_message}: {exc!r}")

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= self._warn_interval_s:
            self._last_warning = now
            log.warning(message)

    async def returns_done(self) -> None:
        """Wait for the lease returns a reload started (they run on the event loop)."""
        if self._returns:
            await asyncio.gather(*self._returns, return_exceptions=True)

    async def aclose(self) -> None:
        await self.returns_done()
        await self._add_each_team(self._leases.drain(self._clock()), "return of unspent leases")
        await self._client.aclose()
        if isinstance(self._client, aioredis.Redis):  # a cluster client closes its nodes' pools itself
            await self._client.connection_pool.disconnect()


def _tagged(team: str, charges: list[Charge]) -> list[Charge]:
    """The same charges, their keys prefixed with the team's hash tag: `{team}:<window key>`."""
    tag = team_tag(team) + ":"
    return [Charge(tag + c.key, c.scope, c.owner, c.limit_name, c.amount, c.limit, c.window_end) for c in charges]


def _used(raw: list[bytes | None], count: int) -> list[int]:
    """Each window's count from an MGET of its names (tagged, then untagged ones if asked): the sum,
    as a window lives under one of the two."""
    values = [int(v) if v is not None else 0 for v in raw]
    return [sum(values[i::count]) for i in range(count)]
