"""The ledger's poison check (stores.record_problem) answers as the field-by-field walk it replaced, for
plain records and for every kind of bad or odd value in every field: its fast test only ever says "fine"."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest

from observability import stores
from observability.stores import MAX_VALUE, record_problem
from observability.usage import UsageRecord
from tests.unit.observability.conftest import record


def walk(rec: UsageRecord) -> str | None:
    """The check as it was (before the fast test): every field, then every rollup counter, one by one."""
    if not isinstance(rec.team, str) or not isinstance(rec.request_id, str):
        return "team and request_id must be strings"
    for name in rec.__dataclass_fields__:
        value = getattr(rec, name)
        if any(map(stores._bad_number, value)) if value.__class__ is tuple else stores._bad_number(value):
            return f"{name} is not a storable number ({str(value)[:40]})"
    try:
        fields = UsageRecord.rollup_fields.func(rec)  # type: ignore[attr-defined]  # uncached
    except (ValueError, OverflowError, TypeError) as exc:
        return f"its rollup fields cannot be computed: {exc}"
    for name, value in fields.items():
        if stores._bad_number(value):
            return f"rollup field {name} is out of range"
    return None


def outcome(check: Any, rec: UsageRecord) -> tuple[str, Any]:
    """The answer, or the exception's type where the check raises (the walk did for a str field holding an int:
    the rollups call str methods on it)."""
    try:
        return "answer", check(rec)
    except Exception as exc:  # noqa: BLE001  # compared, not swallowed
        return "raised", type(exc)


class Odd(float):
    """A float subclass (as numpy's float64 is): the walk checks it as a number."""


BAD = [float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 2**53 + 1, -(2**53) - 1, 2**64, 10**400,
       float(2**53) * 2, Odd("inf"), Odd(1e300)]
FINE = [0, 0.0, -0.0, 1, -1, 2**53, -(2**53), float(2**53), 1e-300, True, False, None, Odd(1.5), "text", (), {}]


def _cases() -> list[tuple[str, Any]]:
    names = [f.name for f in dataclasses.fields(UsageRecord)]
    # (not cost_usd="text": the rollups multiply it by 10^9, a 4 GB string, in the walk as in the check)
    return [(name, value) for name in names for value in BAD + FINE if (name, value) != ("cost_usd", "text")] + [
        ("itl_gaps_s", gaps) for gaps in [(0.1, float("nan")), (0.1,) * 40, (1e300,), (0.1, "x"), (0.1, None),
                                           (2**53 + 1, 0.5), (10**400, 0.5), (Odd("nan"),), [0.1, float("inf")]]]


def _wrong_kind(name: str, value: Any) -> bool:
    """A text field holding other than str / None, a number field other than a number / None."""
    if value is None:
        return False
    if name in stores._TEXT_FIELDS:
        return not isinstance(value, str)
    return name in stores._NUMERIC_FIELDS and not isinstance(value, (int, float))


def test_every_field_holding_any_value_gets_the_walks_answer() -> None:
    for name, value in _cases():  # ~900 cases: one test, not one each (pytest's own cost per case)
        rec = record()
        object.__setattr__(rec, name, value)  # past the types: what a buggy producer could hand the ledger
        if _wrong_kind(name, value):  # the walk passed some of these, or raised on the ledger's thread
            kind, problem = outcome(record_problem, rec)
            assert kind == "answer" and problem is not None and name in problem, (name, value, problem)
        else:
            assert outcome(record_problem, rec) == outcome(walk, rec), (name, value)


def test_a_field_of_the_wrong_kind_is_poison_not_an_exception_on_the_ledgers_thread() -> None:
    for name, value in [("backend", 5), ("model_alias", 1.5), ("status", ("ok",)), ("error_type", {}),
                        ("prompt_tokens", "12"), ("cost_usd", "0.5"), ("e2e_s", [1.0]), ("ttft_s", "x")]:
        rec = record()
        object.__setattr__(rec, name, value)
        problem = record_problem(rec)  # before: AttributeError for ints in text; a str cost_usd repeated 10^9 times
        assert problem is not None and problem.startswith(name), (name, value, problem)
    rec = record()
    object.__setattr__(rec, "backend", None)  # None reads as "none" in the rollups: storable
    assert record_problem(rec) is None


@pytest.mark.parametrize("overrides", [
    {}, {"stream": False, "itl_gaps_s": (), "ttft_s": None, "itl_p50_s": None, "itl_p95_s": None, "itl_max_s": None},
    {"cost_usd": 9e6}, {"cost_usd": 1e7},  # nano-USD counter: 9e15 fits, 1e16 does not
    {"prompt_tokens": 94_906_265}, {"prompt_tokens": 94_906_266},  # reg|sxx = prompt²: just under / over 2^53
    {"rule": "shadow"}, {"rule": "shadow", "cost_usd": 1e7}, {"itl_gaps_s": (0.01,) * 5000},
])
def test_plain_records_near_the_limits_get_the_walks_answer(overrides: dict[str, Any]) -> None:
    rec = record(**overrides)
    assert record_problem(rec) == walk(rec)


def test_the_fast_test_passes_plain_records_and_refuses_every_bad_number() -> None:
    assert stores._fields_small(record())
    assert stores._sum_small([MAX_VALUE - 1]) and not stores._sum_small([MAX_VALUE])
    assert not stores._sum_small([2**53 + 1, 0.5])  # the int rounds to 2^53 as a float: still refused
    assert not stores._sum_small([float("nan"), 1.0]) and not stores._sum_small([1e308, 1e308])
    assert not stores._sum_small([10**400, 0.5])  # OverflowError inside: refused, not raised
    for value in BAD:
        rec = record()
        object.__setattr__(rec, "e2e_s", value)
        assert not stores._fields_small(rec), value
    assert math.isnan(float("nan"))


def test_every_field_is_in_exactly_one_group() -> None:
    groups = (stores._NUMERIC_FIELDS, stores._TEXT_FIELDS, stores._TUPLE_FIELDS, stores._OTHER_FIELDS)
    names = [name for group in groups for name in group]
    assert sorted(names) == sorted(f.name for f in dataclasses.fields(UsageRecord))
    assert "itl_gaps_s" in stores._TUPLE_FIELDS and "prompt_tokens" in stores._NUMERIC_FIELDS
