"""A faster __init__ for the frozen, slotted dataclasses built per request (RequestFacts, LiveState,
RouteDecision, …): the same signature and values, each slot written through its own descriptor
rather than object.__setattr__ (which a frozen class's init pays per field: ~half the build time)."""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"  # as dataclasses shows it in the signature


_FACTORY = _Factory()  # the parameter default of a field with a default_factory: built per instance


def fast_init(cls: type[T]) -> type[T]:
    """Class decorator, outside @dataclass(frozen=True, slots=True): replaces the generated __init__.
    Instances stay frozen (the dataclass's __setattr__ still refuses); no __post_init__ is allowed."""
    params = getattr(cls, "__dataclass_params__", None)
    slotted = "__slots__" in cls.__dict__
    if params is None or not params.frozen or not slotted or hasattr(cls, "__post_init__"):
        raise TypeError(f"fast_init needs a frozen, slotted dataclass without __post_init__: {cls.__name__}")
    names: list[str] = []
    body: list[str] = []
    scope: dict[str, Any] = {"_FACTORY": _FACTORY}
    for i, f in enumerate(dataclasses.fields(cls)):
        if not f.init or f.kw_only:
            raise TypeError(f"fast_init: {cls.__name__}.{f.name} is init=False or keyword-only")
        slot = cls.__dict__[f.name]
        scope[f"_set{i}"] = getattr(slot, "slot", slot).__set__  # under a lazy_fields wrapper: its slot
        value = f.name
        if f.default is not dataclasses.MISSING:
            scope[f"_default{i}"] = f.default
            names.append(f"{f.name}=_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory{i}"] = f.default_factory
            names.append(f"{f.name}=_FACTORY")
            value = f"_factory{i}() if {f.name} is _FACTORY else {f.name}"
        else:
            names.append(f.name)
        body.append(f"    _set{i}(self, {value})\n")
    source = f"def __init__(self, {', '.join(names)}):\n{''.join(body) or '    pass'}\n"
    exec(source, scope)  # as dataclasses builds its own __init__: one straight-line function per class
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # the signature dataclasses gave it
    cls.__init__ = init  # type: ignore[misc]
    return cls
