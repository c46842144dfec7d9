"""Where API keys live: the KeyStorage protocol every store follows, and the SQLite store under the
data dir (the embedded default; gateway/key_store_redis.py shares keys across replicas). Only
sha256 hashes are stored; the key is shown once. Stores are synchronous: the gateway calls them off
its event loop (gateway/key_cache.py)."""
from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

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


class KeyStoreUnavailable(Exception):
    """The store cannot be reached (Redis down, SQLite locked): no answer, which is not a "no"."""


class KeyStorage(Protocol):
    def create(self, team: str, name: str = "") -> tuple[str, KeyInfo]:
        """Store a new key's hash; return the key (the only time it exists) and its info."""
        ...

    def lookup(self, key_hash: str) -> KeyInfo | None:
        """The active key with this sha256 hex hash; None when unknown or revoked."""
        ...

    def list(self, include_revoked: bool = False) -> list[KeyRow]: ...

    def revoke(self, key_id: str) -> bool:
        """True when an active key was revoked now."""
        ...

    def count(self) -> int:
        """Keys ever made, revoked ones included."""
        ...

    def close(self) -> None: ...


class KeyStore:
    """SQLite, one connection; a lock serialises the threads the gateway looks keys up from."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> KeyStore:
        return cls(data_dir / "keys.sqlite3")

    def create(self, team: str, name: str = "") -> tuple[str, KeyInfo]:
        if not team.strip():
            raise ValueError("team must not be empty")
        key, key_id = new_key()
        self._run("INSERT INTO api_keys (key_id, key_hash, team, name, created_at) VALUES (?, ?, ?, ?, ?)",
                  (key_id, hash_key(key), team, name, time.time()))
        return key, KeyInfo(key_id=key_id, team=team, name=name)

    def lookup(self, key_hash: str) -> KeyInfo | None:
        rows = self._run("SELECT key_id, team, name FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                         (key_hash,))
        return None if not rows else KeyInfo(key_id=rows[0][0], team=rows[0][1], name=rows[0][2])

    def list(self, include_revoked: bool = False) -> list[KeyRow]:
        sql = "SELECT key_id, team, name, created_at, revoked_at FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        return [KeyRow(*row) for row in self._run(sql + " ORDER BY created_at")]

    def revoke(self, key_id: str) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                                   (time.time(), key_id))
            return cur.rowcount > 0

    def count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM api_keys")[0][0])

    def close(self) -> None:
        self._db.close()

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk I/O
                raise KeyStoreUnavailable(f"key store {self.path}: {exc}") from exc


SqliteKeyStore = KeyStore  # the name beside RedisKeyStore
