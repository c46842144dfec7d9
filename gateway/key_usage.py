"""Spend to date and last use of each virtual key: a usage-ledger observer that adds every record's
cost and time to its key's running total in memory (on the ledger's writer thread), and writes the
totals to the key store in one batch at most every `interval_s`, from a timer thread (never the
request path, one write per interval instead of one per record). The ledger stays the truth; these
counters are for `keys list` and /admin/keys. Also each key's budget status (spent / limit /
forecast) from the limiter's windows."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from gateway.key_store import KeyStorage, KeyStoreUnavailable, KeyUse
from observability.chargeback import forecast
from observability.limits import window
from observability.limits_protocol import LimitUsage
from observability.usage import UsageRecord

log = logging.getLogger(__name__)
NANO = 1_000_000_000
_PERIODS = {"usd_per_day": "day", "usd_per_month": "month"}


class KeyUsageRecorder:
    def __init__(self, store: KeyStorage, *, interval_s: float = 1.0, warn_interval_s: float = 30.0) -> None:
        self._store = store
        self._interval_s = interval_s
        self._warn_interval_s = warn_interval_s
        self._last_warning = float("-inf")
        self._pending: dict[str, KeyUse] = {}
        self._lock = threading.Lock()  # guards _pending, _timer and _closed
        self._writing = threading.Lock()  # one batch written at a time (timer and close)
        self._timer: threading.Timer | None = None
        self._closed = False

    def __call__(self, record: UsageRecord) -> None:
        if not record.key_id or record.key_id.startswith("policy:"):  # policy-file keys have no record
            return
        use = KeyUse(1, max(round(record.cost_usd * NANO), 0), record.time)
        with self._lock:
            self._add({record.key_id: use})

    def flush(self) -> None:
        """Write what has been added up so far; kept for the next try when the store is unreachable."""
        with self._writing:
            with self._lock:
                batch, self._pending, self._timer = self._pending, {}, None
            if not batch:
                return
            try:
                self._store.record_uses(batch)
            except KeyStoreUnavailable as exc:  # the records themselves still reach the ledger
                self._warn(f"key spend and last use not updated, key store unreachable: {exc}")
                with self._lock:
                    self._add(batch)

    def close(self) -> None:
        """After the ledger's last records: write what is pending (one last try), start no more timers."""
        with self._lock:
            self._closed = True
            timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self.flush()

    def _add(self, uses: dict[str, KeyUse]) -> None:  # holding _lock
        for key_id, use in uses.items():
            seen = self._pending.get(key_id)
            self._pending[key_id] = use if seen is None else seen.plus(use)
        if self._timer is None and not self._closed:
            self._timer = threading.Timer(self._interval_s, self.flush)
            self._timer.name, self._timer.daemon = "hybridgw-key-usage", True
            self._timer.start()

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_warning >= self._warn_interval_s:
            self._last_warning = now
            log.warning(message)


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
