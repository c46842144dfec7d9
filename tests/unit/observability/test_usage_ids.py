"""The embedded store keys records by the gateway's id: one client id repeated across teams keeps
every record, and a ledger file from before the client_request_id column opens and keeps working."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from observability.sqlite_store import SqliteStore
from observability.stores import encode_record
from tests.unit.observability.conftest import T0, record

_OLD_SCHEMA = """
CREATE TABLE usage_records (request_id TEXT PRIMARY KEY, time REAL NOT NULL, team TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX usage_records_team_time ON usage_records (team, time);
CREATE TABLE usage_rollups (team TEXT NOT NULL, period TEXT NOT NULL, start INTEGER NOT NULL, field TEXT NOT NULL,
  value NUMERIC NOT NULL, PRIMARY KEY (team, period, start, field)) WITHOUT ROWID;
"""


def test_one_client_id_across_teams_keeps_every_record(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "u.sqlite3")
    batch = [record(team=team, client_request_id="shared") for team in ("alpha", "alpha", "beta")]
    assert store.write_batch(batch) == 3
    assert store.write_batch(batch) == 0  # a replay of the same records still adds nothing
    assert len(store.records("alpha", T0 - 1, T0 + 1)) == 2 and len(store.records("beta", T0 - 1, T0 + 1)) == 1
    assert {r.client_request_id for r in store.records(None, T0 - 1, T0 + 1)} == {"shared"}
    store.close()


def test_a_ledger_file_from_before_the_column_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = record(request_id="old-client-id")
    with sqlite3.connect(path) as conn:
        conn.executescript(_OLD_SCHEMA)
        conn.execute("INSERT INTO usage_records VALUES (?, ?, ?, ?)", (old.request_id, old.time, old.team,
                                                                       encode_record(old)))
    conn.close()
    store = SqliteStore(path)
    assert store.write_batch([record(client_request_id="c-1")]) == 1
    assert sorted(r.client_request_id for r in store.records(None, T0 - 1, T0 + 1)) == ["", "c-1"]
    store.close()
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT request_id, client_request_id FROM usage_records ORDER BY client_request_id")
        assert [r[1] for r in rows] == ["", "c-1"]
    conn.close()
    SqliteStore(path).close()  # opening a migrated file again changes nothing
