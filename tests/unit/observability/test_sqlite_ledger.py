"""The embedded store, the spill file and the ledger, on a real SQLite file (no sockets)."""
from __future__ import annotations

import fcntl
import json
import sqlite3
from pathlib import Path

from observability.ledger import Ledger, LedgerConfig
from observability.rollups import NANO, grouped
from observability.spill import SpillFile
from observability.sqlite_store import SqliteStore
from tests.unit.observability.conftest import T0, record


def _day_fields(store: SqliteStore, team: str) -> dict[str, float]:
    rollups = store.rollups(team, "day", T0 - 86400, T0 + 86400)
    assert len(rollups) == 1
    return dict(rollups[0].fields)


def test_store_is_idempotent_by_request_id(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "u.sqlite3")
    batch = [record(request_id=f"r{i}", prompt_tokens=10 + i) for i in range(20)]
    assert store.write_batch(batch) == 20
    assert store.write_batch(batch[5:] + [record(request_id="r-new")]) == 1  # replay + one new
    fields = _day_fields(store, "alpha")
    assert fields["requests"] == 21
    assert fields["prompt_tokens"] == sum(10 + i for i in range(20)) + 100
    hours = store.rollups("alpha", "hour", T0 - 3600, T0 + 3600)
    assert sum(r.fields["requests"] for r in hours) == 21
    assert len(store.records("alpha", T0 - 1, T0 + 1)) == 21
    assert store.records("alpha", T0 - 1, T0 + 1)[0].itl_gaps_s == ()  # gaps live in the rollups only
    assert store.teams() == ["alpha"]
    store.close()


def test_a_batch_repeating_an_id_counts_it_once(tmp_path: Path) -> None:
    """The first of a repeated request_id wins, inside a batch and across the batch's id look-ups (chunks of 500)."""
    store = SqliteStore(tmp_path / "u.sqlite3")
    assert store.write_batch([record(request_id="r0", team="é团", prompt_tokens=7)]) == 1
    batch = [record(request_id=f"r{i}", team="é团", prompt_tokens=1) for i in range(1200)]
    assert store.write_batch(batch + [record(request_id="r1", team="é团", prompt_tokens=1000)]) == 1199
    fields = _day_fields(store, "é团")
    assert fields["requests"] == 1200
    assert fields["prompt_tokens"] == 7 + 1199
    assert {r.team for r in store.records("é团", T0 - 1, T0 + 1)} == {"é团"}
    store.close()


def test_two_connections_share_the_file(tmp_path: Path) -> None:
    writer, reader = SqliteStore(tmp_path / "u.sqlite3"), SqliteStore(tmp_path / "u.sqlite3")
    writer.write_batch([record(team="beta", cost_usd=0.25)])
    assert _day_fields(reader, "beta")["cost_nusd"] == NANO // 4
    writer.close()
    reader.close()


def test_spill_replays_and_deletes_its_files(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path)
    spill.append([record(request_id="a"), record(request_id="b")])
    spill.append([record(request_id="c")])
    got: list[str] = []
    assert spill.replay(lambda batch: got.extend(r.request_id for r in batch)) == 3
    assert got == ["a", "b", "c"]
    assert not spill.has_pending() and not list(tmp_path.glob("spill-*"))


def test_spill_skips_files_a_live_writer_holds_and_torn_lines(tmp_path: Path) -> None:
    held = tmp_path / "spill-1-held.jsonl"
    held.write_text(json.dumps(record(request_id="held").to_dict()) + "\n")
    torn = tmp_path / "spill-2-torn.jsonl"
    torn.write_text(json.dumps(record(request_id="whole").to_dict()) + "\n" + '{"request_id": "cut')
    with open(held) as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # as its (live) writer does
        got: list[str] = []
        SpillFile(tmp_path).replay(lambda batch: got.extend(r.request_id for r in batch))
        assert got == ["whole"]
        assert held.exists() and not torn.exists()


def test_ledger_writes_everything_on_close(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "u.sqlite3")
    ledger = Ledger(store, spill=SpillFile(tmp_path / "spill"), config=LedgerConfig(batch_size=64)).start()
    for i in range(1000):
        ledger.submit(record(request_id=f"r{i}", backend="local" if i % 4 == 0 else "openai"))
    ledger.close()
    fields = _day_fields(store, "alpha")
    assert fields["requests"] == 1000
    assert grouped(fields, "backend")["local"]["requests"] == 250
    assert ledger.stats.written == 1000 and ledger.stats.spilled == 0


def test_ledger_spills_while_the_store_is_locked_then_replays(tmp_path: Path) -> None:
    path = tmp_path / "u.sqlite3"
    store = SqliteStore(path, busy_timeout_s=0.05)  # fail fast while the other writer holds the lock
    spill = SpillFile(tmp_path / "spill")
    ledger = Ledger(store, spill=spill, config=LedgerConfig(batch_size=50, flush_interval_s=0.02,
                                                            retry_interval_s=0.05)).start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holding the database: writes fail
    for i in range(300):
        ledger.submit(record(request_id=f"r{i}"))
    assert ledger.flush(10)
    assert ledger.stats.spilled == 300 and ledger.stats.store_down
    blocker.execute("ROLLBACK")
    blocker.close()
    assert ledger.flush(10, include_spill=True)
    ledger.close()
    assert _day_fields(store, "alpha")["requests"] == 300
    assert ledger.stats.replayed == 300


def test_observers_see_each_record_once_even_when_a_write_is_retried(tmp_path: Path) -> None:
    path = tmp_path / "u.sqlite3"
    seen: list[str] = []
    ledger = Ledger(SqliteStore(path, busy_timeout_s=0.05), spill=None,  # no spill: failed batches are retried
                    config=LedgerConfig(batch_size=40, flush_interval_s=0.02),
                    observers=[lambda r: seen.append(r.request_id)]).start()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    for i in range(100):
        ledger.submit(record(request_id=f"r{i}"))
    assert not ledger.flush(0.5)  # kept in memory while the database is locked
    assert ledger.stats.store_down
    blocker.execute("ROLLBACK")
    blocker.close()
    assert ledger.flush(10)
    ledger.close()
    assert sorted(seen) == sorted(f"r{i}" for i in range(100))
    assert _day_fields(ledger.store, "alpha")["requests"] == 100  # type: ignore[arg-type]
