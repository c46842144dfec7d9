"""Where API keys live: the KeyStorage protocol every store follows, and the SQLite store under the
data dir (the embedded default; gateway/key_store_redis.py shares keys across replicas). Only
sha256 hashes are stored; the key is shown once. Stores are synchronous: the gateway calls them off
its event loop (gateway/key_cache.py)."""
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gateway.auth import KeyInfo, hash_key, key_for, new_key
from gateway.key_spec import KeySpec

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
# Added with virtual keys; a key file from before gets them on open (ALTER TABLE ... ADD COLUMN).
_COLUMNS = {"spec": "TEXT", "rotated_at": "REAL", "last_used_at": "REAL",
            "spend_nano": "INTEGER NOT NULL DEFAULT 0", "requests": "INTEGER NOT NULL DEFAULT 0"}
# A rotated key's old hash, served until valid_until (the grace period).
_GRACE = """
CREATE TABLE IF NOT EXISTS api_key_grace (
    key_hash TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    valid_until REAL NOT NULL
)
"""
_ROW = "key_id, team, name, created_at, revoked_at, spec, rotated_at, last_used_at, spend_nano, requests"
NANO = 1_000_000_000


@dataclass(frozen=True)
class KeyRow:
    key_id: str
    team: str
    name: str
    created_at: float
    revoked_at: float | None
    spec: KeySpec = field(default_factory=KeySpec)
    rotated_at: float | None = None
    last_used_at: float | None = None  # the last request's time, as the usage ledger recorded it
    spend_usd: float = 0.0  # to date, from the usage ledger's records
    requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The admin API's and the CLI's view (never the key or its hash)."""
        return {"key_id": self.key_id, "team": self.team, "name": self.name, "created_at": self.created_at,
                "revoked_at": self.revoked_at, "rotated_at": self.rotated_at, "last_used_at": self.last_used_at,
                "spend_usd": round(self.spend_usd, 9), "requests": self.requests, **self.spec.to_dict()}


def row_from(values: Sequence[Any]) -> KeyRow:
    key_id, team, name, created, revoked, spec, rotated, last_used, spend_nano, requests = values
    return KeyRow(str(key_id), str(team), str(name), float(created), None if revoked is None else float(revoked),
                  KeySpec.from_json(spec), None if rotated is None else float(rotated),
                  None if last_used is None else float(last_used), int(spend_nano or 0) / NANO, int(requests or 0))


@dataclass(frozen=True)
class KeyUse:
    """One or more requests of a key, added up: what record_uses adds to the key's record."""

    requests: int
    spend_nano: int  # USD in nano-dollars, so sums are exact
    last_used_at: float  # the latest record's time

    def plus(self, other: KeyUse) -> KeyUse:
        return KeyUse(self.requests + other.requests, self.spend_nano + other.spend_nano,
                      max(self.last_used_at, other.last_used_at))


class KeyStoreUnavailable(Exception):
    """The store cannot be reached (Redis down, SQLite locked): no answer, which is not a "no"."""


class KeyStorage(Protocol):
    def create(self, team: str, name: str = "", spec: KeySpec | None = None) -> tuple[str, KeyInfo]:
        """Store a new key's hash; return the key (the only time it exists) and its info."""
        ...

    def lookup(self, key_hash: str) -> KeyInfo | None:
        """The active key with this sha256 hex hash (a rotated key's old hash within its grace period
        too); None when unknown or revoked. Expiry is the caller's to check (auth.check_key_live)."""
        ...

    def get(self, key_id: str) -> KeyRow | None: ...

    def list(self, include_revoked: bool = False) -> list[KeyRow]: ...

    def update(self, key_id: str, name: str, spec: KeySpec) -> bool:
        """Replace an active key's name and spec; False when there is no such active key."""
        ...

    def rotate(self, key_id: str, grace_s: float) -> tuple[str, KeyInfo] | None:
        """A new secret for the key (same id, team, spec and spend); the old one keeps working for
        grace_s seconds. None when there is no such active key."""
        ...

    def revoke(self, key_id: str) -> bool:
        """True when an active key was revoked now (its grace-period hashes go with it)."""
        ...

    def record_uses(self, uses: Mapping[str, KeyUse]) -> None:
        """Add requests and spend to each key's record and move its last-used time forward (never
        back), all keys in one write; ids of no stored key are skipped (off the request path)."""
        ...

    def count(self) -> int:
        """Keys ever made, revoked ones included."""
        ...

    def close(self) -> None: ...


class KeyStore:
    """SQLite, one connection; a lock serialises the threads the gateway looks keys up from."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute(_SCHEMA)
        self._db.execute(_GRACE)
        have = {row[1] for row in self._db.execute("PRAGMA table_info(api_keys)")}
        for column, kind in _COLUMNS.items():
            if column not in have:
                self._db.execute(f"ALTER TABLE api_keys ADD COLUMN {column} {kind}")

    @classmethod
    def in_data_dir(cls, data_dir: Path, **kwargs: Any) -> KeyStore:
        return cls(data_dir / "keys.sqlite3", **kwargs)

    def create(self, team: str, name: str = "", spec: KeySpec | None = None) -> tuple[str, KeyInfo]:
        if not team.strip():
            raise ValueError("team must not be empty")
        spec = spec or KeySpec()
        key, key_id = new_key()
        self._run("INSERT INTO api_keys (key_id, key_hash, team, name, created_at, spec) VALUES (?, ?, ?, ?, ?, ?)",
                  (key_id, hash_key(key), team, name, self._clock(), spec.to_json()))
        return key, KeyInfo(key_id=key_id, team=team, name=name, spec=spec)

    def lookup(self, key_hash: str) -> KeyInfo | None:
        rows = self._run("SELECT key_id, team, name, spec FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                         (key_hash,))
        if not rows:
            rows = self._run("SELECT k.key_id, k.team, k.name, k.spec FROM api_key_grace g JOIN api_keys k "
                             "ON k.key_id = g.key_id WHERE g.key_hash = ? AND g.valid_until > ? "
                             "AND k.revoked_at IS NULL", (key_hash, self._clock()))
        if not rows:
            return None
        key_id, team, name, spec = rows[0]
        return KeyInfo(str(key_id), str(team), str(name), KeySpec.from_json(spec))  # type: ignore[arg-type]

    def get(self, key_id: str) -> KeyRow | None:
        rows = self._run(f"SELECT {_ROW} FROM api_keys WHERE key_id = ?", (key_id,))
        return row_from(rows[0]) if rows else None

    def list(self, include_revoked: bool = False) -> list[KeyRow]:
        sql = f"SELECT {_ROW} FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        return [row_from(row) for row in self._run(sql + " ORDER BY created_at")]

    def update(self, key_id: str, name: str, spec: KeySpec) -> bool:
        return self._change("UPDATE api_keys SET name = ?, spec = ? WHERE key_id = ? AND revoked_at IS NULL",
                            (name, spec.to_json(), key_id)) > 0

    def rotate(self, key_id: str, grace_s: float) -> tuple[str, KeyInfo] | None:
        key = key_for(key_id)
        now = self._clock()
        with self._transaction() as db:  # the CLI and the gateway may rotate at once
            found = db.execute("SELECT key_hash, team, name, spec FROM api_keys WHERE key_id = ? "
                               "AND revoked_at IS NULL", (key_id,)).fetchall()
            if found:
                old_hash, team, name, spec = found[0]
                db.execute("UPDATE api_keys SET key_hash = ?, rotated_at = ? WHERE key_id = ?",
                           (hash_key(key), now, key_id))
                if grace_s > 0:
                    db.execute("INSERT OR REPLACE INTO api_key_grace VALUES (?, ?, ?)",
                               (old_hash, key_id, now + grace_s))
            db.execute("DELETE FROM api_key_grace WHERE valid_until <= ?", (now,))  # lapsed ones
        if not found:
            return None
        return key, KeyInfo(key_id, team, name, KeySpec.from_json(spec))

    def revoke(self, key_id: str) -> bool:
        revoked = self._change("UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
                               (self._clock(), key_id)) > 0
        self._change("DELETE FROM api_key_grace WHERE key_id = ?", (key_id,))
        return revoked

    def record_use(self, key_id: str, cost_usd: float, at: float) -> None:
        self.record_uses({key_id: KeyUse(1, max(round(cost_usd * NANO), 0), at)})

    def record_uses(self, uses: Mapping[str, KeyUse]) -> None:
        rows = [(u.spend_nano, u.requests, u.last_used_at, key_id) for key_id, u in uses.items()]
        with self._transaction() as db:  # one transaction (one WAL commit) for the batch
            db.executemany("UPDATE api_keys SET spend_nano = spend_nano + ?, requests = requests + ?, "
                           "last_used_at = MAX(COALESCE(last_used_at, 0), ?) WHERE key_id = ?", rows)

    def count(self) -> int:
        return int(self._run("SELECT COUNT(*) FROM api_keys")[0][0])  # type: ignore[call-overload]

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE under the lock, COMMIT at the end of the block or ROLLBACK on any error in it."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk I/O
                raise KeyStoreUnavailable(f"key store {self.path}: {exc}") from exc

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:  # locked past busy_timeout, disk I/O
                raise KeyStoreUnavailable(f"key store {self.path}: {exc}") from exc

    def _change(self, sql: str, args: tuple[object, ...]) -> int:
        with self._lock:
            try:
                return self._db.execute(sql, args).rowcount
            except sqlite3.OperationalError as exc:
                raise KeyStoreUnavailable(f"key store {self.path}: {exc}") from exc


SqliteKeyStore = KeyStore  # the name beside RedisKeyStore
