"""Spend to date and last use of each virtual key: a usage-ledger observer that adds every record's
cost and time to its key's record in the key store, on the ledger's writer thread (never on the
request path). The ledger stays the truth; these counters are for `keys list` and /admin/keys. Also
each key's budget status (spent / limit / forecast) from the limiter's windows."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from gateway.key_store import KeyStorage, KeyStoreUnavailable
from observability.chargeback import forecast
from observability.limits import LimitUsage, window
from observability.usage import UsageRecord

log = logging.getLogger(__name__)
_PERIODS = {"usd_per_day": "day", "usd_per_month": "month"}


class KeyUsageRecorder:
    def __init__(self, store: KeyStorage, *, warn_interval_s: float = 30.0) -> None:
        self._store = store
        self._warn_interval_s = warn_interval_s
        self._last_warning = float("-inf")

    def __call__(self, record: UsageRecord) -> None:
        if not record.key_id or record.key_id.startswith("policy:"):  # policy-file keys have no record
            return
        try:
            self._store.record_use(record.key_id, record.cost_usd, record.time)
        except KeyStoreUnavailable as exc:  # the record itself still reaches the ledger
            now = time.monotonic()
            if now - self._last_warning >= self._warn_interval_s:
                self._last_warning = now
                log.warning("key spend and last use not updated, key store unreachable: %s", exc)


def key_budget_status(usages: Iterable[LimitUsage], now: float) -> dict[str, dict[str, float] | None]:
    """A key's own USD budgets as the limiter counts them now (the windows it enforces, every replica's
    spend with Redis): {"day": {spent_usd, limit_usd, forecast_usd}, "month": ...}, None where unset.
    Pure: the caller reads `usages` (Limiter.usage) and the clock."""
    out: dict[str, dict[str, float] | None] = {"day": None, "month": None}
    for u in usages:
        if u.scope != "key" or u.limit_name not in _PERIODS:
            continue
        start, end = window(u.limit_name, now)
        out[_PERIODS[u.limit_name]] = {"spent_usd": round(u.used, 9), "limit_usd": u.limit,
                                       "forecast_usd": round(forecast(u.used, start, end, now), 9)}
    return out
