"""The usage store seam (raw records + rollups): the protocol every store implements, its errors, the
record encoding and the checks all stores share. observability/wiring.py opens the configured one."""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from itertools import chain
from operator import attrgetter
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
    plain = record.__class__ is UsageRecord and _fields_small(record)
    if not plain:
        problem = _field_problem(record)  # the walk, field by field, names the bad one
        if problem is not None:
            return problem
    try:
        counters = record.rollup_fields  # kept on the record: the store's rollups read it again
    except Exception as exc:  # noqa: BLE001 (whatever the record holds, the ledger's thread gets an answer)
        return f"its rollup fields cannot be computed: {exc}"
    if plain and _sum_small(counters.values()):  # from plain numbers, record_fields makes plain numbers
        return None
    for name, value in counters.items():
        if _bad_number(value):
            return f"rollup field {name} is out of range"
    return None


def _field_problem(record: UsageRecord) -> str | None:
    for name in _TEXT_FIELDS:  # the rollups call str methods on these: an int there raised on the ledger's thread
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            return f"{name} is not text ({type(value).__name__})"
    for name in _NUMERIC_FIELDS:  # the rollups multiply these: a str cost_usd was repeated 10^9 times
        value = getattr(record, name)
        if value is not None and not isinstance(value, (int, float)):
            return f"{name} is not a number ({type(value).__name__})"
    for name in record.__dataclass_fields__:
        value = getattr(record, name)
        if any(map(_bad_number, value)) if value.__class__ is tuple else _bad_number(value):
            return f"{name} is not a storable number ({str(value)[:40]})"
    return None


# The poison check runs per record on the ledger's thread; the walk above costs ~2.7 k instructions a field
# (~35 fields). The fast test below asks C for the same answer when it is "all good" and leaves every
# doubt to the walk: it reads UsageRecord's fields in groups by their declared type and passes a record
# only when each group holds only its plain kinds and the sum of the numbers' magnitudes is < 2^53. That
# sum (floats rounded up or down, never below the largest term) is >= every term, and NaN / inf fail the
# test, so a record it passes is one where no number is bad.
_PLAIN_NUMBERS = frozenset((int, float, bool, type(None)))
_NEVER_NUMBERS = frozenset((str, bool, dict, type(None)))  # what _bad_number always passes
_NUMBER_TYPES = frozenset(("int", "float", "bool", "int | None", "float | None"))
_NUMERIC_FIELDS = tuple(f.name for f in fields(UsageRecord) if f.type in _NUMBER_TYPES)
_TEXT_FIELDS = tuple(f.name for f in fields(UsageRecord) if f.type == "str")
_TUPLE_FIELDS = tuple(f.name for f in fields(UsageRecord) if str(f.type).startswith("tuple["))
_OTHER_FIELDS = tuple(f.name for f in fields(UsageRecord)
                      if f.name not in (*_NUMERIC_FIELDS, *_TEXT_FIELDS, *_TUPLE_FIELDS))
# "team" pads each getter (a str field: harmless in every group's test), so each returns a tuple even of one name
_numeric_values, _text_values, _tuple_values, _other_values = (
    attrgetter(*names, "team") for names in (_NUMERIC_FIELDS, _TEXT_FIELDS, _TUPLE_FIELDS, _OTHER_FIELDS))


def _fields_small(record: UsageRecord) -> bool:
    """True only when no field of the record is a bad number (False: ask _field_problem)."""
    try:
        "".join(_text_values(record))  # str fields hold str: a TypeError names anything else
    except TypeError:
        return False
    numbers = _numeric_values(record)[:-1]
    tuples = _tuple_values(record)[:-1]
    if not (set(map(type, _other_values(record))) <= _NEVER_NUMBERS and set(map(type, numbers)) <= _PLAIN_NUMBERS
            and all(t.__class__ is tuple and set(map(type, t)) <= _PLAIN_NUMBERS for t in tuples)):
        return False
    return _sum_small(chain(numbers, *tuples))


def _sum_small(values: Iterable[object]) -> bool:
    """The sum of the values' magnitudes (None skipped) below 2^53: only for plain ints, floats, bools."""
    try:
        return sum(map(abs, filter(None, values))) < MAX_VALUE  # type: ignore[arg-type]
    except OverflowError:  # an int past a float's range beside a float
        return False


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
