"""dict_init's __init__ builds what dataclass's own does: the same fields, defaults, fresh factory values,
positional and keyword calls, the same errors; the record stays frozen, replace() and the cached rollups work."""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from observability.fast_init import dict_init
from observability.usage import EngineView, UsageRecord
from tests.unit.observability.conftest import record


def _twin() -> type:
    """UsageRecord's fields in a plain frozen dataclass: dataclass's own __init__, for comparison."""
    specs = [(f.name, f.type, dataclasses.field(default=f.default) if f.default_factory is dataclasses.MISSING
              else dataclasses.field(default_factory=f.default_factory)) for f in dataclasses.fields(UsageRecord)]
    return dataclasses.make_dataclass("Twin", specs, frozen=True)


def test_a_record_holds_what_dataclass_init_would_give_it() -> None:
    Twin = _twin()
    kwargs = {f.name: getattr(record(), f.name) for f in dataclasses.fields(UsageRecord)
              if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    ours, theirs = UsageRecord(**kwargs), Twin(**kwargs)
    assert vars(ours) == vars(theirs)  # every field, defaults and factories included, in the same order
    assert list(vars(ours)) == [f.name for f in dataclasses.fields(UsageRecord)]
    positional = UsageRecord(*kwargs.values())
    assert positional == ours
    view = {"e": EngineView(0.1, 1, 2, 3, None, None)}
    assert UsageRecord(**kwargs, engine_view=view, tags={"a": "b"}).engine_view is view


def test_factory_defaults_are_fresh_per_record_and_the_record_stays_frozen() -> None:
    a, b = record(), record()
    assert a.tags == {} and a.tags is not b.tags and a.engine_view is not b.engine_view
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.team = "other"  # type: ignore[misc]
    assert dataclasses.replace(a, team="beta").team == "beta" and a.team == "alpha"
    assert a.rollup_fields is a.rollup_fields and a.rollup_fields["requests"] == 1


def test_the_signature_and_its_errors_are_dataclasses() -> None:
    Twin = _twin()
    assert list(inspect.signature(UsageRecord).parameters) == list(inspect.signature(Twin).parameters)
    assert inspect.signature(UsageRecord).parameters["error_type"].default == ""
    with pytest.raises(TypeError):
        UsageRecord(request_id="r")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        record(no_such_field=1)


def test_classes_it_cannot_serve_are_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Slotted:
        a: int

    @dataclass
    class Mutable:
        a: int

    @dataclass(frozen=True)
    class Checked:
        a: int = field(default=0)

        def __post_init__(self) -> None:
            pass

    for cls in (Slotted, Mutable, Checked):
        with pytest.raises(TypeError):
            dict_init(cls)
