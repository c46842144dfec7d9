"""Faster __init__s for the frozen dataclasses built per request, with the same signature, defaults and values:
`fast_init` for slotted ones (RequestFacts, RouteDecision, …: each slot written through its own descriptor),
`dict_init` for ones that keep a __dict__ (UsageRecord: the fields' dict built in one step and set once)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"  # as dataclasses shows it in the signature


_FACTORY = _Factory()  # the parameter default of a field with a default_factory: built per instance


def fast_init(cls: type[T]) -> type[T]:
    """Class decorator, outside @dataclass(frozen=True, slots=True): replaces the generated __init__ (a frozen
    class's pays object.__setattr__ per field: ~half the build time). Instances stay frozen."""
    if "__slots__" not in cls.__dict__:
        raise TypeError(f"fast_init needs a frozen, slotted dataclass without __post_init__: {cls.__name__}")

    def body(names: list[str], values: list[str], scope: dict[str, Any]) -> str:
        for i, name in enumerate(names):
            slot = cls.__dict__[name]
            scope[f"_set{i}"] = getattr(slot, "slot", slot).__set__  # under a lazy_fields wrapper: its slot
        return "".join(f"    _set{i}(self, {value})\n" for i, value in enumerate(values)) or "    pass\n"

    return _replace_init(cls, "fast_init", body)


def dict_init(cls: type[T]) -> type[T]:
    """Class decorator, outside @dataclass(frozen=True) (not slotted, e.g. for a cached_property): replaces
    the generated __init__. Instances stay frozen (the dataclass's __setattr__ still refuses)."""
    if "__slots__" in cls.__dict__:
        raise TypeError(f"dict_init needs a frozen dataclass with a __dict__ and no __post_init__: {cls.__name__}")

    def body(names: list[str], values: list[str], scope: dict[str, Any]) -> str:
        scope["_set_dict"] = object.__setattr__
        items = ", ".join(f"{name!r}: {value}" for name, value in zip(names, values))
        return f"    _set_dict(self, '__dict__', {{{items}}})\n"

    return _replace_init(cls, "dict_init", body)


def _replace_init(cls: type[T], what: str,
                  body: Callable[[list[str], list[str], dict[str, Any]], str]) -> type[T]:
    """The new __init__'s signature (defaults, factories) from the dataclass's fields; `body` writes the values
    (field names, their value expressions, the function's scope) as the decorator's storage needs."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or hasattr(cls, "__post_init__"):
        raise TypeError(f"{what} needs a frozen dataclass without __post_init__: {cls.__name__}")
    params_src: list[str] = []
    names: list[str] = []
    values: list[str] = []
    scope: dict[str, Any] = {"_FACTORY": _FACTORY}
    for i, f in enumerate(dataclasses.fields(cls)):
        if not f.init or f.kw_only:
            raise TypeError(f"{what}: {cls.__name__}.{f.name} is init=False or keyword-only")
        value = f.name
        if f.default is not dataclasses.MISSING:
            scope[f"_default{i}"] = f.default
            params_src.append(f"{f.name}=_default{i}")
        elif f.default_factory is not dataclasses.MISSING:
            scope[f"_factory{i}"] = f.default_factory
            params_src.append(f"{f.name}=_FACTORY")
            value = f"_factory{i}() if {f.name} is _FACTORY else {f.name}"
        else:
            params_src.append(f.name)
        names.append(f.name)
        values.append(value)
    source = f"def __init__(self, {', '.join(params_src)}):\n{body(names, values, scope)}"
    exec(source, scope)  # as dataclasses builds its own __init__: one straight-line function per class
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # the signature dataclasses gave it
    cls.__init__ = init  # type: ignore[misc]
    return cls
