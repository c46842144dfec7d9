"""Which usage store and which limiter a deployment gets: the Redis ones when REDIS_URL is set (shared
by every replica), else the embedded ones (the SQLite file in the data dir, an in-process limiter)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from observability.limits_config import LimitsConfig
from observability.limits_inprocess import InProcessLimiter
from observability.sqlite_store import SqliteStore
from observability.stores import SQLITE_FILENAME, UsageStore

if TYPE_CHECKING:
    from observability.limits_redis import RedisLimiter


def open_store(redis_url: str | None, data_dir: Path) -> UsageStore:
    """The store the gateway writes and the report reads (REDIS_URL wins over the SQLite file)."""
    if redis_url:
        # imported here, not above: redis (~150 ms of imports) is loaded only by deployments that use it
        from observability.redis_store import RedisStore

        return RedisStore.from_url(redis_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    return SqliteStore(data_dir / SQLITE_FILENAME)


def build_limiter(config: LimitsConfig, redis_url: str | None) -> InProcessLimiter | RedisLimiter:
    """Redis-backed across replicas when REDIS_URL is set, else in-process."""
    if redis_url:
        from observability.limits_redis import RedisLimiter  # as above: only with REDIS_URL

        return RedisLimiter.from_url(redis_url, config)
    return InProcessLimiter(config)
