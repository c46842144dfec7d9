"""The usage store seam (raw records + rollups): the protocol every store implements, its errors, the
record encoding and the checks all stores share. observability/wiring.py opens the configured one."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import orjson

from observability.rollups import Rollup
from observability.usage import UsageRecord

SQLITE_FILENAME = "usage.sqlite3"


class StoreUnavailable(Exception):
    """The store cannot be written right now (Redis down, SQLite locked); the caller keeps the batch."""


class StoreRefused(StoreUnavailable):
    """The store answered but refused the write (Redis OOM, READONLY after a failover, NOSCRIPT, a
    full disk): retried like an outage, but a problem of this replica's store that /readyz shows."""


# Far below int64, so sums of many records still fit the stores' 64-bit counters.
MAX_VALUE = 2**53


def _bad_number(value: object) -> bool:
    if value.__class__ is int or value.__class__ is float:  # the common case: one chained comparison
        return not -MAX_VALUE <= value <= MAX_VALUE  # type: ignore[operator]  # NaN compares False: bad
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not math.isfinite(value) or abs(value) > MAX_VALUE


def record_problem(record: UsageRecord) -> str | None:
    """Why no store could ever hold this record (then it is poison: dead-lettered, not retried), or None.
    Every number, and every rollup counter it adds, must be finite and below 2^53 (an upstream once
    reported 1e300 prompt tokens)."""
    if not isinstance(record.team, str) or not isinstance(record.request_id, str):
        return "team and request_id must be strings"
    for name in record.__dataclass_fields__:  # runs once per record on the ledger's thread: no copies
        value = getattr(record, name)
        if any(map(_bad_number, value)) if value.__class__ is tuple else _bad_number(value):
            return f"{name} is not a storable number ({str(value)[:40]})"
    try:
        fields = record.rollup_fields  # kept on the record: the store's rollups read it again
    except (ValueError, OverflowError, TypeError) as exc:
        return f"its rollup fields cannot be computed: {exc}"
    for name, value in fields.items():
        if _bad_number(value):
            return f"rollup field {name} is out of range"
    return None


class UsageStore(Protocol):
    def write_batch(self, records: Sequence[UsageRecord]) -> int:
        """Store records and add them to rollups, idempotent by request_id; returns how many were new.
        Raises StoreUnavailable when nothing or only part was written (a retry is safe)."""
        ...

    def rollups(self, team: str | None, period: str, since: float, until: float) -> list[Rollup]:
        """Rollups of the periods overlapping [since, until), for one team or (None) every team."""
        ...

    def records(self, team: str | None, since: float, until: float, limit: int = 10_000) -> list[UsageRecord]:
        """Raw records (newest first, at most `limit`) with time in [since, until)."""
        ...

    def teams(self) -> list[str]: ...

    def ping(self) -> bool: ...

    def close(self) -> None: ...


def default_data_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """$HYBRIDGW_DATA_DIR, else ~/.hybridgw (the gateway uses the same folder)."""
    configured = environ.get("HYBRIDGW_DATA_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".hybridgw"


def encode_record(record: UsageRecord) -> str:
    """The raw form kept in a store: everything but the per-gap list, which the rollups already hold."""
    data = record.to_dict()
    data.pop("itl_gaps_s", None)
    try:  # ~5x cheaper than json.dumps; readers json.loads it back to the same values (non-ASCII kept as UTF-8)
        return orjson.dumps(data).decode()
    except TypeError:  # what orjson refuses (a non-str tag key, an int past 64 bits): json as before
        return json.dumps(data, separators=(",", ":"))


def decode_record(text: str | bytes) -> UsageRecord:
    return UsageRecord.from_dict(json.loads(text))
