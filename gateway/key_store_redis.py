"""API keys in Redis, shared by every gateway replica (REDIS_URL). Only sha256 hashes are stored:
`<prefix>hash:<hash>` points an active key's hash at its id (deleted on revocation; a rotated key's
old hash carries `valid_until` and expires then), `<prefix>id:<key_id>` holds its record (team, name,
spec, spend), `<prefix>grace:<key_id>` its old hashes, `<prefix>ids` the set of ids. Every change is
one Lua script. The prefix `hgw:{keys}:` is a hash tag: on Redis Cluster every key record lives in one
slot, so the scripts may touch several. On one server, records under the untagged `hgw:keys:` of
earlier versions are moved to the tagged names once per process (and again when a lookup misses)."""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import redis
from redis.exceptions import RedisError

from gateway.auth import KeyInfo, hash_key, key_for, new_key
from gateway.key_spec import KeySpec
from gateway.key_store import NANO, KeyRow, KeyStoreUnavailable, KeyUse
from observability.redis_clients import CLUSTER_DOWN, LazyCluster, is_cluster_client, sync_client

# KEYS: id record, hash record, id set; ARGV: hash, team, name, created_at, key_id, spec. 0: id taken.
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'key_hash', ARGV[1], 'team', ARGV[2], 'name', ARGV[3], 'created_at', ARGV[4],
           'spec', ARGV[6])
redis.call('HSET', KEYS[2], 'key_id', ARGV[5], 'team', ARGV[2], 'name', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
return 1
"""
# KEYS: hash record; ARGV: id records' prefix, now. The key's {id, team, name, spec}, or nil.
_LOOKUP_LUA = """
local id = redis.call('HGET', KEYS[1], 'key_id')
if not id then return nil end
local valid_until = redis.call('HGET', KEYS[1], 'valid_until')
if valid_until and tonumber(valid_until) <= tonumber(ARGV[2]) then return nil end
local rec = redis.call('HMGET', ARGV[1] .. id, 'team', 'name', 'spec', 'revoked_at')
if not rec[1] or rec[4] then return nil end
return {id, rec[1], rec[2] or '', rec[3] or ''}
"""
# KEYS: id record, grace set; ARGV: now, the hash records' prefix. 1: an active key was revoked now.
_REVOKE_LUA = """
local h = redis.call('HGET', KEYS[1], 'key_hash')
if not h or redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
redis.call('DEL', ARGV[2] .. h)
for _, old in ipairs(redis.call('SMEMBERS', KEYS[2])) do redis.call('DEL', ARGV[2] .. old) end
redis.call('DEL', KEYS[2])
return 1
"""
# KEYS: id record; ARGV: name, spec. 1: an active key was changed.
_UPDATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'name', ARGV[1], 'spec', ARGV[2])
return 1
"""
# KEYS: id record, new hash record, grace set; ARGV: new hash, now, valid_until (0: no grace), the hash
# records' prefix, key_id, expire-at (whole seconds). 1: rotated; 0: no active key; -1: hash taken.
_ROTATE_LUA = """
local old = redis.call('HGET', KEYS[1], 'key_hash')
if not old or redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('HSET', KEYS[2], 'key_id', ARGV[5], 'team', redis.call('HGET', KEYS[1], 'team'))
redis.call('HSET', KEYS[1], 'key_hash', ARGV[1], 'rotated_at', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('HSET', ARGV[4] .. old, 'valid_until', ARGV[3])
  redis.call('EXPIREAT', ARGV[4] .. old, ARGV[6])
  redis.call('SADD', KEYS[3], old)
else
  redis.call('DEL', ARGV[4] .. old)
end
return 1
"""
# KEYS: id record; ARGV: nano-USD, latest time, requests. Keys the store does not hold (policy-file keys) are skipped.
_USE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'spend_nano', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'requests', ARGV[3])
local last = tonumber(redis.call('HGET', KEYS[1], 'last_used_at') or '0')
if tonumber(ARGV[2]) > last then redis.call('HSET', KEYS[1], 'last_used_at', ARGV[2]) end
return 1
"""
# One server only (it touches keys it cannot name in advance). ARGV: the old prefix, the new one.
# Moves every key's records from the old names; a name already taken is left as it is. Returns how
# many keys it moved.
_MIGRATE_LUA = """
local old, new = ARGV[1], ARGV[2]
local function move(suffix)
  if redis.call('EXISTS', old .. suffix) == 1 then redis.call('RENAMENX', old .. suffix, new .. suffix) end
end
local ids = redis.call('SMEMBERS', old .. 'ids')
for _, id in ipairs(ids) do
  local h = redis.call('HGET', old .. 'id:' .. id, 'key_hash')
  if h then move('hash:' .. h) end
  for _, g in ipairs(redis.call('SMEMBERS', old .. 'grace:' .. id)) do move('hash:' .. g) end
  move('grace:' .. id)
  move('id:' .. id)
  redis.call('SADD', new .. 'ids', id)
end
redis.call('DEL', old .. 'ids')
return #ids
"""
LEGACY_PREFIX = "hgw:keys:"
# Any Redis error is "no answer" (down, READONLY after a failover, OOM, ...): a 503, never a 500.
_DOWN = (RedisError, OSError, *CLUSTER_DOWN)


def _opt(record: dict[str, str], name: str) -> float | None:
    return float(record[name]) if name in record else None


def _row(key_id: str, r: dict[str, str]) -> KeyRow:
    return KeyRow(key_id, r["team"], r.get("name", ""), float(r["created_at"]), _opt(r, "revoked_at"),
                  KeySpec.from_json(r.get("spec")), _opt(r, "rotated_at"), _opt(r, "last_used_at"),
                  int(r.get("spend_nano", 0)) / NANO, int(r.get("requests", 0)))


class RedisKeyStore:
    def __init__(self, client: redis.Redis | LazyCluster, *, prefix: str = "hgw:{keys}:",
                 clock: Callable[[], float] = time.time) -> None:
        self._client = client
        self._clock = clock
        self._prefix = prefix
        self._scripts = {name: client.register_script(lua) for name, lua in (
            ("create", _CREATE_LUA), ("lookup", _LOOKUP_LUA), ("revoke", _REVOKE_LUA), ("update", _UPDATE_LUA),
            ("rotate", _ROTATE_LUA), ("use", _USE_LUA), ("migrate", _MIGRATE_LUA))}
        self._migrated = False  # one server may hold keys under the untagged names (a cluster never did)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisKeyStore:
        # Bounded waits: a hung Redis makes a lookup fail (then the cache's stale entry or a 503).
        return cls(sync_client(url, client_name="hybridgw-keys", decode_responses=True, socket_timeout=2.0,
                               socket_connect_timeout=2.0),
                   **kwargs)

    def _migrate(self, again: bool = False) -> int:
        """Move keys stored under the untagged names (once per process; `again`: once more, for a key
        an older replica or CLI made meanwhile). Returns how many it moved."""
        if is_cluster_client(self._client) or self._prefix == LEGACY_PREFIX or self._migrated and not again:
            return 0
        moved = int(self._scripts["migrate"](keys=[], args=[LEGACY_PREFIX, self._prefix]))  # type: ignore[arg-type]
        self._migrated = True
        return moved

    def create(self, team: str, name: str = "", spec: KeySpec | None = None) -> tuple[str, KeyInfo]:
        if not team.strip():
            raise ValueError("team must not be empty")
        spec = spec or KeySpec()
        for _ in range(8):  # key ids are 8 hex digits: a clash is rare, and retried with a new key
            key, key_id = new_key()
            digest = hash_key(key)
            keys = [f"{self._prefix}id:{key_id}", f"{self._prefix}hash:{digest}", f"{self._prefix}ids"]
            if self._call("create", keys, [digest, team, name, repr(self._clock()), key_id, spec.to_json()]):
                return key, KeyInfo(key_id=key_id, team=team, name=name, spec=spec)
        raise RuntimeError("could not find a free key id")

    def lookup(self, key_hash: str) -> KeyInfo | None:
        found = self._call("lookup", [f"{self._prefix}hash:{key_hash}"], [f"{self._prefix}id:", repr(self._clock())])
        if not found and self._guarded(lambda: self._migrate(again=True)):
            found = self._call("lookup", [f"{self._prefix}hash:{key_hash}"], [f"{self._prefix}id:", repr(self._clock())])
        if not found:
            return None
        key_id, team, name, spec = found  # type: ignore[misc]
        return KeyInfo(key_id, team, name, KeySpec.from_json(spec))

    def get(self, key_id: str) -> KeyRow | None:
        record = self._guarded(lambda: self._client.hgetall(f"{self._prefix}id:{key_id}"))
        return _row(key_id, record) if record else None  # type: ignore[arg-type]

    def list(self, include_revoked: bool = False) -> list[KeyRow]:
        try:
            self._migrate()
            ids = sorted(self._client.smembers(f"{self._prefix}ids"))  # type: ignore[arg-type]
            pipe = self._client.pipeline(transaction=False)
            for key_id in ids:
                pipe.hgetall(f"{self._prefix}id:{key_id}")
            records = pipe.execute()
        except _DOWN as exc:
            raise KeyStoreUnavailable(f"key store unreachable: {exc!r}") from exc
        rows = [_row(key_id, r) for key_id, r in zip(ids, records) if r]
        return sorted((r for r in rows if include_revoked or r.revoked_at is None), key=lambda r: r.created_at)

    def update(self, key_id: str, name: str, spec: KeySpec) -> bool:
        return bool(self._call("update", [f"{self._prefix}id:{key_id}"], [name, spec.to_json()]))

    def rotate(self, key_id: str, grace_s: float) -> tuple[str, KeyInfo] | None:
        for _ in range(8):
            key = key_for(key_id)
            digest, now = hash_key(key), self._clock()
            until = now + grace_s if grace_s > 0 else 0.0
            done = self._call("rotate", [f"{self._prefix}id:{key_id}", f"{self._prefix}hash:{digest}",
                                         f"{self._prefix}grace:{key_id}"],
                              [digest, repr(now), repr(until), f"{self._prefix}hash:", key_id,
                               str(math.ceil(until))])
            if done == 0:
                return None
            if done == 1:
                row = self.get(key_id)
                if row is None:  # deleted by hand between the two calls
                    return None
                return key, KeyInfo(key_id, row.team, row.name, row.spec)
        raise RuntimeError("could not find a free key hash")

    def revoke(self, key_id: str) -> bool:
        return bool(self._call("revoke", [f"{self._prefix}id:{key_id}", f"{self._prefix}grace:{key_id}"],
                               [repr(self._clock()), f"{self._prefix}hash:"]))

    def record_use(self, key_id: str, cost_usd: float, at: float) -> None:
        self.record_uses({key_id: KeyUse(1, max(round(cost_usd * NANO), 0), at)})

    def record_uses(self, uses: Mapping[str, KeyUse]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)  # the whole batch in one round trip
            for key_id, use in uses.items():
                self._scripts["use"](keys=[f"{self._prefix}id:{key_id}"], client=pipe,
                                     args=[str(use.spend_nano), repr(use.last_used_at), str(use.requests)])
            pipe.execute()
        except _DOWN as exc:
            raise KeyStoreUnavailable(f"key store unreachable: {exc!r}") from exc

    def count(self) -> int:
        return int(self._guarded(lambda: self._client.scard(f"{self._prefix}ids")))

    def close(self) -> None:
        self._client.close()

    def _call(self, script: str, keys: list[str], args: list[str]) -> object:
        return self._guarded(lambda: self._scripts[script](keys=keys, args=args))

    def _guarded(self, call: Callable[[], Any]) -> Any:
        """call() once any untagged keys are moved; a Redis that cannot answer is KeyStoreUnavailable."""
        try:
            self._migrate()
            return call()
        except _DOWN as exc:
            raise KeyStoreUnavailable(f"key store unreachable: {exc!r}") from exc
