"""The production usage store: per-team hour/day rollups as Redis hashes and raw records in a
capped stream per team, all written by one Lua script per record so a record counts exactly once
(a SET NX on its request id, in the same script, makes replays after an outage harmless). That id
is the gateway's own, never the client's x-request-id, so no client can make records collide.
A team's keys carry its hash tag (`hgw:{team}:…`), so the script runs on Redis Cluster too; on one
server, what was written under the names from before the tags is still read and deduplicated."""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any, cast

import redis
from redis.exceptions import BusyLoadingError, NoScriptError, OutOfMemoryError, ReadOnlyError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from observability.redis_clients import CLUSTER_DOWN, LazyCluster, is_cluster_client, sync_client, team_tag
from observability.rollups import (
    DAY_S,
    HOUR_S,
    Fields,
    Rollup,
    is_float_field,
    period_start,
)
from observability.stores import StoreRefused, StoreUnavailable, decode_record, encode_record
from observability.usage import UsageRecord

# KEYS: seen, hour rollup, day rollup, stream (all of one team's slot); on one server also the seen
# key's untagged name, written before the tags.
# ARGV: seen ttl, hour ttl, day ttl, stream maxlen, body, integer fields (JSON object of decimal
# strings: strings so no value is ever turned into a float), float fields (JSON object of numbers).
# One JSON argument each instead of ~80 separate ones keeps the client's encoding work small.
_WRITE_LUA = """
if KEYS[5] and redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for name, value in pairs(cjson.decode(ARGV[6])) do
  redis.call('HINCRBY', KEYS[2], name, value)
  redis.call('HINCRBY', KEYS[3], name, value)
end
for name, value in pairs(cjson.decode(ARGV[7])) do
  redis.call('HINCRBYFLOAT', KEYS[2], name, value)
  redis.call('HINCRBYFLOAT', KEYS[3], name, value)
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('EXPIRE', KEYS[3], ARGV[3])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'r', ARGV[5])
return 1
"""
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, *CLUSTER_DOWN)
# Errors of the server's state, not of a record: retried (spilled meanwhile), never dead-lettered.
_REFUSED_TYPES = (OutOfMemoryError, ReadOnlyError, NoScriptError, BusyLoadingError)
_REFUSED_WORDS = ("OOM", "READONLY", "NOSCRIPT", "LOADING", "BUSY", "MISCONF", "MASTERDOWN", "NOREPLICAS",
                  "TRYAGAIN", "CLUSTERDOWN", "maxmemory", "read only replica")


def _refused(exc: ResponseError) -> bool:
    return isinstance(exc, _REFUSED_TYPES) or any(word in str(exc) for word in _REFUSED_WORDS)


class RedisStore:
    def __init__(
        self,
        client: redis.Redis | LazyCluster,
        *,
        prefix: str = "hgw:",
        seen_ttl_s: int = 7 * DAY_S,  # replays within this long of the first write are deduplicated
        hour_ttl_s: int = 40 * DAY_S,
        day_ttl_s: int = 400 * DAY_S,
        max_records_per_team: int = 100_000,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._ttls = (seen_ttl_s, hour_ttl_s, day_ttl_s)
        self._maxlen = max_records_per_team
        self._script = client.register_script(_WRITE_LUA)
        self._cluster = is_cluster_client(client)  # else one server, maybe with untagged names

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        client = sync_client(url, client_name="hybridgw-ledger", socket_timeout=2.0, socket_connect_timeout=1.0)
        return cls(client, **kwargs)

    def _rollup_key(self, team: str, period: str, start: int) -> str:
        return f"{self._prefix}{team_tag(team)}:roll:{period}:{start}"

    def _stream_key(self, team: str) -> str:
        return f"{self._prefix}{team_tag(team)}:records"

    def _names(self, team: str, period: str, start: int) -> list[str]:
        """A rollup's key, then (one server) its name from before the tags."""
        old = [f"{self._prefix}roll:{team}:{period}:{start}"] if not self._cluster else []
        return [self._rollup_key(team, period, start), *old]

    def _streams(self, team: str) -> list[str]:
        return [self._stream_key(team), *([f"{self._prefix}records:{team}"] if not self._cluster else [])]

    def _script_call(self, record: UsageRecord) -> tuple[list[str], list[Any]]:
        ints, floats = {}, {}
        for name, value in record.rollup_fields.items():  # computed once: the ledger's poison check read it
            if is_float_field(name):
                floats[name] = float(value)
            else:
                ints[name] = str(int(value))
        keys = [
            f"{self._prefix}{team_tag(record.team)}:seen:{record.request_id}",
            self._rollup_key(record.team, "hour", period_start(record.time, "hour")),
            self._rollup_key(record.team, "day", period_start(record.time, "day")),
            self._stream_key(record.team),
        ]
        if not self._cluster:
            keys.append(f"{self._prefix}seen:{record.request_id}")
        args: list[Any] = [*self._ttls, self._maxlen, encode_record(record),
                           json.dumps(ints, separators=(",", ":")), json.dumps(floats, separators=(",", ":"))]
        return keys, args

    def write_batch(self, records: Sequence[UsageRecord]) -> int:
        try:
            return self._write(records)
        except _DOWN as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        except ResponseError as exc:
            if _refused(exc):
                raise StoreRefused(f"redis: {exc}") from exc
            raise  # a record the script refused: the ledger retries it alone, then dead-letters it

    def _write(self, records: Sequence[UsageRecord]) -> int:
        pipe = self._client.pipeline(transaction=False)
        # The teams set first and apart from the script (another slot on a cluster): a team listed
        # whose record then failed is harmless, a record of an unlisted team would be missed.
        pipe.sadd(f"{self._prefix}teams", *sorted({r.team for r in records}))
        for record in records:
            keys, args = self._script_call(record)
            if self._cluster:  # its pipelines refuse EVALSHA; EVAL also spares a restarted node's NOSCRIPT
                pipe.execute_command("EVAL", _WRITE_LUA, len(keys), *keys, *args)
            else:
                self._script(keys=keys, args=args, client=pipe)
            time.sleep(0)  # a batch is CPU work: let the gateway's event loop thread in between records
        return sum(int(r) for r in pipe.execute()[1:])

    def rollups(self, team: str | None, period: str, since: float, until: float) -> list[Rollup]:
        teams = [team] if team is not None else self.teams()
        step = HOUR_S if period == "hour" else DAY_S
        wanted = [(t, s) for s in range(period_start(since, period), int(until), step) for t in teams]
        names = [self._names(t, period, s) for t, s in wanted]
        try:
            pipe = self._client.pipeline(transaction=False)
            for name in (n for each in names for n in each):
                pipe.hgetall(name)
            results = iter(pipe.execute())
        except _DOWN as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        found = [(t, s, _sum_hashes([next(results) for _ in each])) for (t, s), each in zip(wanted, names)]
        return [Rollup(team=t, period=period, start=s, fields=fields) for t, s, fields in found if fields]

    def records(self, team: str | None, since: float, until: float, limit: int = 10_000) -> list[UsageRecord]:
        if limit <= 0:
            return []  # XREVRANGE refuses COUNT 0 (the per-team totals of /v1/usage ask for no points)
        teams = [team] if team is not None else self.teams()
        found: list[UsageRecord] = []
        try:
            for stream in (name for t in teams for name in self._streams(t)):
                entries = cast(list[tuple[bytes, dict[bytes, bytes]]],
                               self._client.xrevrange(stream, count=limit) or [])
                for _, entry in entries:
                    record = decode_record(entry[b"r"])
                    if since <= record.time < until:
                        found.append(record)
        except _DOWN as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        found.sort(key=lambda r: r.time, reverse=True)
        return found[:limit]

    def teams(self) -> list[str]:
        try:
            members = self._client.smembers(f"{self._prefix}teams")
        except _DOWN as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in cast(set[bytes], members))

    def ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except _DOWN:
            return False

    def close(self) -> None:
        self._client.close()


def _sum_hashes(raws: list[dict[bytes, bytes]]) -> Fields:
    """One rollup's fields, added up over its hashes (a period may have been written under both names)."""
    out: Fields = {}
    for raw in raws:
        for name, value in raw.items():
            key = name.decode()
            out[key] = out.get(key, 0) + (float(value) if is_float_field(key) else int(value))
    return out
