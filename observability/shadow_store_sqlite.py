"""The embedded pair store: shadow pairs in `shadow_pairs.sqlite` in the data dir, one row per pair,
the newest `cap` per team kept (older ones deleted as new ones come). WAL, so the export CLI reads
while the gateway writes."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import orjson

from observability.shadow_pairs import ShadowPair

SHADOW_SQLITE_FILENAME = "shadow_pairs.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS shadow_pairs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, team TEXT NOT NULL, request_id TEXT NOT NULL,
  time REAL NOT NULL, body TEXT NOT NULL, UNIQUE (team, request_id));
CREATE INDEX IF NOT EXISTS shadow_pairs_team_seq ON shadow_pairs (team, seq);
"""


class SqlitePairStore:
    def __init__(self, path: Path, *, busy_timeout_s: float = 10.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SqlitePairStore:
        return cls(Path(data_dir) / SHADOW_SQLITE_FILENAME)

    def add(self, pair: ShadowPair, cap: int) -> None:
        body = orjson.dumps(pair.to_dict()).decode()
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("INSERT OR IGNORE INTO shadow_pairs (team, request_id, time, body) VALUES (?, ?, ?, ?)",
                                   (pair.team, pair.request_id, pair.time, body))
                # keep the newest `cap` of this team: what is older than the cap-th newest goes
                self._conn.execute("DELETE FROM shadow_pairs WHERE team = ? AND seq <= (SELECT seq FROM shadow_pairs "
                                   "WHERE team = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)", (pair.team, pair.team, cap))
                self._conn.execute("COMMIT")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise

    def pairs(self, team: str, limit: int | None = None) -> list[ShadowPair]:
        with self._lock:
            rows = self._conn.execute("SELECT body FROM (SELECT seq, body FROM shadow_pairs WHERE team = ? "
                                      "ORDER BY seq DESC LIMIT ?) ORDER BY seq", (team, -1 if limit is None else limit)
                                      ).fetchall()
        return [ShadowPair.from_dict(orjson.loads(body)) for (body,) in rows]

    def count(self, team: str) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM shadow_pairs WHERE team = ?", (team,)).fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()
