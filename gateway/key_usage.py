"""Spend to date and last use of each virtual key: a usage-ledger observer that adds every record's
cost and time to its key's record in the key store, on the ledger's writer thread (never on the
request path). The ledger stays the truth; these counters are for `keys list` and /admin/keys."""
from __future__ import annotations

import logging
import time

from gateway.key_store import KeyStorage, KeyStoreUnavailable
from observability.usage import UsageRecord

log = logging.getLogger(__name__)


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
