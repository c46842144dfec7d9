"""The embedded usage store (no REDIS_URL): raw records and hour/day rollups in one SQLite file.

WAL mode so the report CLI can read while the gateway writes; one transaction per batch; a
record already present (same request_id: the gateway's own id, never the client's x-request-id)
adds nothing, so replays never double-count. Older files gain the client_request_id column on open.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from observability.rollups import DAY_S, Fields, Rollup, merge_fields, period_start, rollups_for
from observability.stores import StoreRefused, StoreUnavailable, decode_record, encode_record
from observability.usage import UsageRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage_records (
  request_id TEXT PRIMARY KEY, time REAL NOT NULL, team TEXT NOT NULL, body TEXT NOT NULL,
  client_request_id TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS usage_records_team_time ON usage_records (team, time);
CREATE TABLE IF NOT EXISTS usage_rollups (
  team TEXT NOT NULL, period TEXT NOT NULL, start INTEGER NOT NULL, field TEXT NOT NULL,
  value NUMERIC NOT NULL, PRIMARY KEY (team, period, start, field)) WITHOUT ROWID;
"""
# Plain INSERT: _new_records left out every stored id, so a conflict is a bug to raise, not to skip.
_INSERT = "INSERT INTO usage_records (request_id, time, team, body, client_request_id) VALUES (?, ?, ?, ?, ?)"
_IDS_PER_SELECT = 500  # bound parameters per statement (SQLite's limit is 32766; 999 before 3.32)
_UPSERT = """
INSERT INTO usage_rollups (team, period, start, field, value) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (team, period, start, field) DO UPDATE SET value = value + excluded.value
"""


class SqliteStore:
    def __init__(self, path: Path, *, retention_days: float = 90.0, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._retention_s = retention_days * DAY_S
        self._lock = threading.Lock()  # one connection, shared by the ledger thread and readers
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)
        self._migrate()
        self._last_prune = 0.0

    def _migrate(self) -> None:
        """Files written before the client's id had its own column get it (old rows: '')."""
        columns = {row[1] for row in self._conn.execute("PRAGMA table_info(usage_records)")}
        if "client_request_id" not in columns:
            self._conn.execute("ALTER TABLE usage_records ADD COLUMN client_request_id TEXT NOT NULL DEFAULT ''")

    def write_batch(self, records: Sequence[UsageRecord]) -> int:
        try:
            with self._lock:
                return self._write(records)
        except sqlite3.OperationalError as exc:  # locked / disk full: keep the batch and retry later
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreUnavailable(str(exc)) from exc
            raise StoreRefused(f"sqlite: {exc}") from exc
        except OSError as exc:  # e.g. too many open files
            raise StoreRefused(f"sqlite: {exc}") from exc

    def _write(self, records: Sequence[UsageRecord]) -> int:
        cur = self._conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            new = self._new_records(cur, records)
            cur.executemany(_INSERT, [(r.request_id, r.time, r.team, encode_record(r), r.client_request_id)
                                      for r in new])
            rows = [
                (team, period, start, name, value)
                for (team, period, start), fields in rollups_for(new).items()
                for name, value in fields.items()
            ]
            cur.executemany(_UPSERT, rows)
            self._maybe_prune(cur)
            cur.execute("COMMIT")
            return len(new)
        except BaseException:
            try:
                cur.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # already rolled back (a failed COMMIT): keep the original error
            raise

    @staticmethod
    def _new_records(cur: sqlite3.Cursor, records: Sequence[UsageRecord]) -> list[UsageRecord]:
        """The records whose request_id is not stored yet (the first of any repeated in the batch). Read inside
        the write transaction, so nothing else can add one before the INSERT."""
        seen: set[str] = set()
        ids = [r.request_id for r in records]
        for i in range(0, len(ids), _IDS_PER_SELECT):
            chunk = ids[i:i + _IDS_PER_SELECT]
            sql = f"SELECT request_id FROM usage_records WHERE request_id IN ({','.join('?' * len(chunk))})"
            seen.update(request_id for (request_id,) in cur.execute(sql, chunk))
        new = []
        for record in records:
            if record.request_id not in seen:
                seen.add(record.request_id)
                new.append(record)
        return new

    def _maybe_prune(self, cur: sqlite3.Cursor) -> None:
        now = time.time()
        if now - self._last_prune > 3600:
            self._last_prune = now
            cur.execute("DELETE FROM usage_records WHERE time < ?", (now - self._retention_s,))

    def rollups(self, team: str | None, period: str, since: float, until: float) -> list[Rollup]:
        sql = "SELECT team, start, field, value FROM usage_rollups WHERE period = ? AND start >= ? AND start < ?"
        args: list[object] = [period, period_start(since, period), until]
        if team is not None:
            sql += " AND team = ?"
            args.append(team)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        found: dict[tuple[str, int], Fields] = {}
        for row_team, start, name, value in rows:
            found.setdefault((row_team, start), {})[name] = value
        return [
            Rollup(team=t, period=period, start=s, fields=merge_fields([f]))
            for (t, s), f in sorted(found.items(), key=lambda item: (item[0][1], item[0][0]))
        ]

    def records(self, team: str | None, since: float, until: float, limit: int = 10_000) -> list[UsageRecord]:
        sql = "SELECT body FROM usage_records WHERE time >= ? AND time < ?"
        args: list[object] = [since, until]
        if team is not None:
            sql += " AND team = ?"
            args.append(team)
        sql += " ORDER BY time DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [decode_record(body) for (body,) in rows]

    def teams(self) -> list[str]:
        with self._lock:
            rows = self._conn.execute("SELECT DISTINCT team FROM usage_rollups ORDER BY team").fetchall()
        return [team for (team,) in rows]

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        with self._lock:
            self._conn.close()
