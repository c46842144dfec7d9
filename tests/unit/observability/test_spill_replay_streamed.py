"""A replay reads the spill file as it writes it: one batch of records in memory at a time, not a whole
outage's file (read at once, 2,000+ records grew the gateway's heap for good: docs/benchmarks.md, session 12)."""
from __future__ import annotations

import gc
from pathlib import Path

from observability.spill import SpillFile
from observability.sqlite_store import SqliteStore
from observability.usage import UsageRecord
from tests.unit.observability.conftest import record


def _live_records() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is UsageRecord)  # type(): isinstance reads __class__,
    # which some modules' objects answer with a warning (torch.distributed.reduce_op: FutureWarning)


def test_a_replay_holds_one_batch_of_records_not_the_whole_file(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "spill")
    for start in range(0, 2_000, 100):
        spill.append([record(request_id=f"req-{i}") for i in range(start, start + 100)])
    spill.close()
    store = SqliteStore(tmp_path / "usage.db")
    gc.collect()
    before, live = _live_records(), []

    def write(batch: list[UsageRecord]) -> int:
        live.append(_live_records() - before)
        return store.write_batch(batch)

    try:
        assert spill.replay(write, batch_size=100) == 2_000
        assert len(live) == 20 and max(live) <= 2 * 100, live  # read all at once: 2,000 at the first write
        assert not spill.has_pending()
        assert len(store.records(None, 0, 2e9, limit=5_000)) == 2_000  # all of them, once
    finally:
        store.close()
