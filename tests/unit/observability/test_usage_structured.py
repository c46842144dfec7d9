"""The usage record keeps the field that asked for constrained output (`structured_output`) through every way it
is stored — the stores' JSON body, the spill file — and a record from before the field reads as "" (none asked)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from observability.spill import SpillFile
from observability.sqlite_store import SqliteStore
from observability.stores import decode_record, encode_record
from observability.usage import UsageRecord
from tests.unit.observability.conftest import T0, record


def _old_body(asked: UsageRecord) -> str:
    """`asked` as a ledger from before the field stored it."""
    data = json.loads(encode_record(asked))
    del data["structured_output"]
    return json.dumps(data)


def test_the_field_round_trips_through_the_stores_body_and_the_spill(tmp_path: Path) -> None:
    asked = record(structured_output="response_format")
    assert decode_record(encode_record(asked)).structured_output == "response_format"
    spill = SpillFile(tmp_path / "spill")
    spill.append([asked, record()])
    replayed: list[UsageRecord] = []
    assert spill.replay(replayed.extend) == 2
    assert [r.structured_output for r in replayed] == ["response_format", ""]


def test_a_record_from_before_the_field_reads_as_none_asked(tmp_path: Path) -> None:
    old = record(request_id="old", structured_output="guided_json")
    assert decode_record(_old_body(old)).structured_output == ""
    path = tmp_path / "u.sqlite3"
    store = SqliteStore(path)
    store.write_batch([record(request_id="new", structured_output="guided_json")])
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO usage_records (request_id, time, team, body) VALUES (?, ?, ?, ?)",
                     (old.request_id, old.time, old.team, _old_body(old)))
    conn.close()
    store = SqliteStore(path)
    assert {r.request_id: r.structured_output for r in store.records(None, T0 - 1, T0 + 1)} == {
        "new": "guided_json", "old": ""}
    store.close()
