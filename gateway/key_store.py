"""API keys in SQLite under the data dir. Only sha256 hashes are stored; the key is shown once."""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from gateway.auth import KeyInfo, hash_key, new_key

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    key_id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE,
    team TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    team: str
    name: str
    created_at: float
    revoked_at: float | None


class KeyStore:
    """One connection, used from one thread (the event loop, or a CLI)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> KeyStore:
        return cls(data_dir / "keys.sqlite3")

    def create(self, team: str, name: str = "") -> tuple[str, KeyInfo]:
        """Store a new key's hash; return the key (the only time it exists) and its info."""
        if not team.strip():
            raise ValueError("team must not be empty")
        key, key_id = new_key()
        self._db.execute(
            "INSERT INTO api_keys (key_id, key_hash, team, name, created_at) VALUES (?, ?, ?, ?, ?)",
            (key_id, hash_key(key), team, name, time.time()),
        )
        return key, KeyInfo(key_id=key_id, team=team, name=name)

    def lookup(self, key_hash: str) -> KeyInfo | None:
        row = self._db.execute(
            "SELECT key_id, team, name FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (key_hash,)
        ).fetchone()
        return None if row is None else KeyInfo(key_id=row[0], team=row[1], name=row[2])

    def list(self, include_revoked: bool = False) -> list[KeyRow]:
        sql = "SELECT key_id, team, name, created_at, revoked_at FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        return [KeyRow(*row) for row in self._db.execute(sql + " ORDER BY created_at")]

    def revoke(self, key_id: str) -> bool:
        cur = self._db.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL", (time.time(), key_id)
        )
        return cur.rowcount > 0

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM api_keys").fetchone()[0])

    def close(self) -> None:
        self._db.close()
