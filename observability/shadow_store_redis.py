"""Pairs in Redis, shared by every replica: one list per team, `hgw:{team}:shadow` (hash-tagged by team
like the ledger's keys, so it lives in the team's Cluster slot), newest `cap` kept by LTRIM."""
from __future__ import annotations

from typing import Any

import orjson

from observability.redis_clients import sync_client, team_tag
from observability.shadow_pairs import ShadowPair


def pairs_key(team: str) -> str:
    return f"hgw:{team_tag(team)}:shadow"


class RedisPairStore:
    def __init__(self, client: Any) -> None:
        self._client = client

    @classmethod
    def from_url(cls, url: str) -> RedisPairStore:
        return cls(sync_client(url, socket_timeout=5.0, socket_connect_timeout=5.0))

    def add(self, pair: ShadowPair, cap: int) -> None:
        key = pairs_key(pair.team)
        pipe = self._client.pipeline(transaction=False)  # one key: also fine on a Cluster
        pipe.lpush(key, orjson.dumps(pair.to_dict()))
        pipe.ltrim(key, 0, cap - 1)
        pipe.execute()

    def pairs(self, team: str, limit: int | None = None) -> list[ShadowPair]:
        raw = self._client.lrange(pairs_key(team), 0, -1 if limit is None else limit - 1)
        return [ShadowPair.from_dict(orjson.loads(item)) for item in reversed(raw)]

    def count(self, team: str) -> int:
        return int(self._client.llen(pairs_key(team)))

    def close(self) -> None:
        self._client.close()
