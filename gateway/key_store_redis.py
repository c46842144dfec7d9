"""API keys in Redis, shared by every gateway replica (REDIS_URL). Only sha256 hashes are stored:
`<prefix>hash:<hash>` holds an active key's team (deleted on revocation), `<prefix>id:<key_id>` its
record for listing, `<prefix>ids` the set of ids. Create and revoke are one Lua script each."""
from __future__ import annotations

import time

import redis
from redis.exceptions import RedisError

from gateway.auth import KeyInfo, hash_key, new_key
from gateway.key_store import KeyRow, KeyStoreUnavailable

# KEYS: id record, hash record, id set; ARGV: hash, team, name, created_at, key_id. 0: id taken.
_CREATE_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'key_hash', ARGV[1], 'team', ARGV[2], 'name', ARGV[3], 'created_at', ARGV[4])
redis.call('HSET', KEYS[2], 'key_id', ARGV[5], 'team', ARGV[2], 'name', ARGV[3])
redis.call('SADD', KEYS[3], ARGV[5])
return 1
"""
# KEYS: id record; ARGV: now, the hash records' prefix. 1: an active key was revoked now.
_REVOKE_LUA = """
local h = redis.call('HGET', KEYS[1], 'key_hash')
if not h or redis.call('HEXISTS', KEYS[1], 'revoked_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'revoked_at', ARGV[1])
redis.call('DEL', ARGV[2] .. h)
return 1
"""
# Any Redis error is "no answer" (down, READONLY after a failover, OOM, ...): a 503, never a 500.
_DOWN = (RedisError, OSError)


class RedisKeyStore:
    def __init__(self, client: redis.Redis, *, prefix: str = "hgw:keys:") -> None:
        self._client = client
        self._prefix = prefix
        self._create = client.register_script(_CREATE_LUA)
        self._revoke = client.register_script(_REVOKE_LUA)

    @classmethod
    def from_url(cls, url: str, **kwargs: str) -> RedisKeyStore:
        # Bounded waits: a hung Redis makes a lookup fail (then the cache's stale entry or a 503).
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0,
                                        socket_connect_timeout=2.0), **kwargs)

    def create(self, team: str, name: str = "") -> tuple[str, KeyInfo]:
        if not team.strip():
            raise ValueError("team must not be empty")
        for _ in range(8):  # key ids are 8 hex digits: a clash is rare, and retried with a new key
            key, key_id = new_key()
            digest = hash_key(key)
            keys = [f"{self._prefix}id:{key_id}", f"{self._prefix}hash:{digest}", f"{self._prefix}ids"]
            if self._call(self._create, keys, [digest, team, name, repr(time.time()), key_id]):
                return key, KeyInfo(key_id=key_id, team=team, name=name)
        raise RuntimeError("could not find a free key id")

    def lookup(self, key_hash: str) -> KeyInfo | None:
        try:
            found = self._client.hgetall(f"{self._prefix}hash:{key_hash}")
        except _DOWN as exc:
            raise KeyStoreUnavailable(f"key store unreachable: {exc!r}") from exc
        return KeyInfo(found["key_id"], found["team"], found.get("name", "")) if found else None

    def list(self, include_revoked: bool = False) -> list[KeyRow]:
        try:
            ids = sorted(self._client.smembers(f"{self._prefix}ids"))
            pipe = self._client.pipeline(transaction=False)
            for key_id in ids:
                pipe.hgetall(f"{self._prefix}id:{key_id}")
            records = pipe.execute()
        except _DOWN as exc:
            raise KeyStoreUnavailable(f"key store unreachable: {exc!r}") from exc
        rows = [KeyRow(key_id, r["team"], r.get("name", ""), float(r["created_at"]),
                       float(r["revoked_at"]) if "revoked_at" in r else None)
                for key_id, r in zip(ids, records) if r]
        return sorted((r for r in rows if include_revoked or r.revoked_at is None), key=lambda r: r.created_at)

    def revoke(self, key_id: str) -> bool:
        return bool(self._call(self._revoke, [f"{self._prefix}id:{key_id}"], [repr(time.time()), f"{self._prefix}hash:"]))

    def count(self) -> int:
        try:
            return int(self._client.scard(f"{self._prefix}ids"))
        except _DOWN as exc:
            raise KeyStoreUnavailable(f"key store unreachable: {exc!r}") from exc

    def close(self) -> None:
        self._client.close()

    def _call(self, script: object, keys: list[str], args: list[str]) -> int:
        try:
            return int(script(keys=keys, args=args))  # type: ignore[operator]
        except _DOWN as exc:
            raise KeyStoreUnavailable(f"key store unreachable: {exc!r}") from exc
