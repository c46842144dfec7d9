"""fast_init: the per-request frozen dataclasses build the same values as dataclasses' own __init__
would (same signature, defaults, fresh default_factory values), and stay frozen."""
from __future__ import annotations

import dataclasses
import inspect
import pickle
from typing import Any

import pytest

from observability.fast_init import fast_init
from policies.decision import RequestFacts, RouteDecision
from policies.live import EngineSnapshot, HealthView, InFlight, LiveState
from policies.strategies.base import Context, Outcome

CLASSES = [RequestFacts, RouteDecision, Outcome, Context, LiveState, EngineSnapshot, HealthView, InFlight]


def _reference(cls: type) -> type:
    """The same fields under dataclasses' own generated __init__."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory))
              for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


def _required(cls: type) -> list[Any]:
    return [f"value-{f.name}" for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_same_signature_and_values_as_the_dataclass_init(cls: type) -> None:
    ref = _reference(cls)
    assert str(inspect.signature(cls)) == str(inspect.signature(ref))
    args = _required(cls)
    ours, theirs = cls(*args), ref(*args)
    for f in dataclasses.fields(cls):
        assert getattr(ours, f.name) == getattr(theirs, f.name), f.name
    names = [f.name for f in dataclasses.fields(cls)][:len(args)]
    assert cls(**dict(zip(names, args, strict=True))) == ours  # by keyword too
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(ours, dataclasses.fields(cls)[0].name, "changed")
    with pytest.raises(TypeError):
        cls(*args, not_a_field=1)
    if args:
        with pytest.raises(TypeError):
            cls(*args[:-1])


def test_default_factories_give_each_instance_its_own() -> None:
    a, b = RequestFacts("t", "m", 1, 2), RequestFacts("t", "m", 1, 2)
    assert a.headers == {} and a.headers is not b.headers and a.est_cost_usd is not b.est_cost_usd
    given = {"x-a": "1"}
    assert RequestFacts("t", "m", 1, 2, headers=given).headers is given


def test_instances_pickle_and_replace_as_before() -> None:
    facts = RequestFacts("t", "m", 10, 20, est_cost_usd={"openai": 0.5})
    assert pickle.loads(pickle.dumps(facts)) == facts
    assert dataclasses.replace(facts, prompt_tokens=11).prompt_tokens == 11


def test_refuses_classes_it_cannot_speed_up() -> None:
    @dataclasses.dataclass(frozen=True)
    class NotSlotted:
        a: int

    @dataclasses.dataclass(slots=True)
    class NotFrozen:
        a: int

    for cls in (NotSlotted, NotFrozen):
        with pytest.raises(TypeError):
            fast_init(cls)
