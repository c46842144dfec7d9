"""The Redis store reads a record's rollup fields from the record (computed once, as the ledger's poison
check and the SQLite store do), not anew per write (a real redis-server)."""
from __future__ import annotations

import pytest

from observability import rollups, usage
from observability.redis_store import RedisStore
from tests.support.redis_server import RedisServer
from tests.unit.observability.conftest import T0, record


def test_a_records_rollup_fields_are_computed_once(redis_server: RedisServer,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counted(r: usage.UsageRecord) -> rollups.Fields:  # the real function, its calls counted
        calls.append(r.request_id)
        return rollups.record_fields(r)

    monkeypatch.setattr(usage, "record_fields", counted)
    import observability.redis_store as redis_store
    if hasattr(redis_store, "record_fields"):  # the store's own reference (before: it computed them again)
        monkeypatch.setattr(redis_store, "record_fields", counted)
    batch = [record(team="alpha"), record(team="beta", status="error", error_type="upstream_error")]
    for r in batch:
        assert r.rollup_fields  # the ledger's poison check
    store = RedisStore.from_url(redis_server.url)
    try:
        assert store.write_batch(batch) == 2
        assert sorted(calls) == sorted(r.request_id for r in batch), calls  # once each
        [hour] = store.rollups("alpha", "hour", T0 - 1, T0 + 1)
        assert hour.fields == pytest.approx(batch[0].rollup_fields)  # the same figures in Redis
    finally:
        store.close()
