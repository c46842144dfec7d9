"""A key's spend and last use, added up from the ledger's records and written to the SQLite key store
in batches: one write per interval whatever the number of records, totals exact, last use never moved
back, what is pending written at close, and the timer flushes without further traffic."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from gateway.key_store import KeyStore, KeyUse
from gateway.key_usage import KeyUsageRecorder
from tests.support.procs import wait_until
from tests.unit.observability.conftest import record


class CountingStore(KeyStore):
    """The SQLite store, counting its batched writes."""

    writes = 0

    def record_uses(self, uses: Mapping[str, KeyUse]) -> None:
        self.writes += 1
        super().record_uses(uses)


def test_many_records_are_one_write_with_exact_totals(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "keys.sqlite3")
    (_, a), (_, b) = store.create("red"), store.create("blue")
    recorder = KeyUsageRecorder(store, interval_s=3600)  # only close() writes here
    for i in range(300):
        recorder(record(key_id=a.key_id if i % 3 else b.key_id, cost_usd=0.001, time=1000.0 + (i * 7) % 300))
    recorder(record(key_id="policy:abc", cost_usd=1.0))  # a policy-file key: no record to add to
    recorder(record(key_id="gone", cost_usd=1.0))  # no such stored key: skipped
    assert store.writes == 0
    recorder.close()
    assert store.writes == 1
    rows = {row.key_id: row for row in store.list()}
    assert (rows[a.key_id].requests, rows[b.key_id].requests) == (200, 100)
    assert round(rows[a.key_id].spend_usd, 9) == 0.2 and round(rows[b.key_id].spend_usd, 9) == 0.1
    assert rows[a.key_id].last_used_at == 1000.0 + max((i * 7) % 300 for i in range(300) if i % 3)
    store.record_use(a.key_id, 0.0, 10.0)  # an older record arriving late does not move it back
    assert store.get(a.key_id).last_used_at == rows[a.key_id].last_used_at  # type: ignore[union-attr]
    store.close()


def test_the_timer_writes_what_is_pending_without_more_traffic(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "keys.sqlite3")
    _, info = store.create("red")
    recorder = KeyUsageRecorder(store, interval_s=0.05)
    for _ in range(5):
        recorder(record(key_id=info.key_id, cost_usd=0.5))
    wait_until(lambda: store.get(info.key_id).requests == 5, "the timer's write")  # type: ignore[union-attr]
    assert store.writes == 1 and store.get(info.key_id).spend_usd == 2.5  # type: ignore[union-attr]
    recorder.close()
    assert store.writes == 1  # nothing was pending
    store.close()
