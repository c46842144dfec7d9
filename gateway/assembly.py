"""What `hybridgw serve` runs beside the app: the key store, the usage ledger (metrics recorded on its
writer thread), limits and budgets mapped from the policy (the embedded limiter's windows rebuilt
from the ledger), Prometheus metrics and tracing; closed in order."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.key_store import KeyStorage, KeyStore
from gateway.key_usage import KeyUsageRecorder
from gateway.settings import Settings
from observability.ledger import Ledger, LedgerConfig, open_ledger
from observability.limiter_health import register_limiter_metrics
from observability.limits_inprocess import InProcessLimiter
from observability.limits_protocol import Limiter
from observability.limits_restore import restore_windows
from observability.metrics import Metrics, RequestMetrics, build_metrics
from observability.tracing import Tracing, build_tracing, tracing_config_from_env
from observability.usage import UsageRecord
from observability.wiring import build_limiter
from policies.limits import limits_from_policy
from policies.schema import Policy

# How long a replica trusts what Redis said about a key: a key revoked on any replica (or with
# `hybridgw keys revoke`) is refused by every other replica at most this long afterwards.
REDIS_KEY_CACHE_S = 5.0
SQLITE_KEY_CACHE_S = 1.0


def open_key_store(settings: Settings) -> KeyStorage:
    """Keys in Redis, shared by every replica, when REDIS_URL is set; else SQLite in the data dir."""
    if settings.redis_url:
        from gateway.key_store_redis import RedisKeyStore  # the embedded case never imports redis

        return RedisKeyStore.from_url(settings.redis_url)
    return KeyStore.in_data_dir(settings.data_dir)


def key_cache_ttl_s(settings: Settings) -> float:
    """Keys are remembered briefly: a Redis lookup is a network round trip, a SQLite one a thread hop
    and a SELECT under the store's lock. A revocation (CLI, other replica) applies within this bound."""
    return REDIS_KEY_CACHE_S if settings.redis_url else SQLITE_KEY_CACHE_S


@dataclass
class Observability:
    ledger: Ledger
    limiter: Limiter
    metrics: Metrics
    request_metrics: RequestMetrics
    tracing: Tracing
    key_usage: KeyUsageRecorder | None = None

    def close(self) -> None:
        self.ledger.close()  # flushes, so the last records still reach metrics and the store
        if self.key_usage is not None:
            self.key_usage.close()  # the keys' spend added up from those last records
        self.tracing.shutdown()
        self.metrics.shutdown()


def build_observability(settings: Settings, policy: Policy, environ: Mapping[str, str],
                        key_store: KeyStorage | None = None, limiter: Limiter | None = None) -> Observability:
    """With `key_store`, each record's cost and time also go to its key (spend to date, last use).
    `limiter`: one built elsewhere (a worker's, counted by its supervisor) instead of the policy's."""
    metrics = build_metrics()
    request_metrics = RequestMetrics(metrics.provider)
    observers: list[Callable[[UsageRecord], None]] = [request_metrics.record]
    key_usage = KeyUsageRecorder(key_store) if key_store is not None else None
    if key_usage is not None:
        observers.append(key_usage)
    ledger_config = LedgerConfig(unready_after_s=settings.ledger_unready_after_s)
    ledger = open_ledger(settings.redis_url, settings.data_dir, ledger_config, observers=observers).start()
    if limiter is None:
        limiter = build_limiter(limits_from_policy(policy), settings.redis_url)
    register_limiter_metrics(metrics.provider, limiter)  # failures of the Redis limiter, by script and kind
    if isinstance(limiter, InProcessLimiter):  # embedded: what this day/month/minute already spent
        restore_windows(limiter, ledger.store, time.time())
    return Observability(
        ledger=ledger, limiter=limiter, metrics=metrics, request_metrics=request_metrics,
        tracing=build_tracing(tracing_config_from_env(environ)), key_usage=key_usage)
