"""A faster __init__ for a frozen dataclass built per request that keeps its fields in the instance __dict__
(UsageRecord: ~35 fields, and a cached_property that needs the __dict__): the same signature, defaults and
values, the fields' dict built in one step and set once, instead of one object.__setattr__ per field."""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"  # as dataclasses shows it in the signature


_FACTORY = _Factory()  # the parameter default of a field with a default_factory: built per instance


def dict_init(cls: type[T]) -> type[T]:
    """Class decorator, outside @dataclass(frozen=True) (not slotted): replaces the generated __init__.
    Instances stay frozen (the dataclass's __setattr__ still refuses); no __post_init__ is allowed."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" in cls.__dict__ or hasattr(cls, "__post_init__"):
        raise TypeError(f"dict_init needs a frozen dataclass with a __dict__ and no __post_init__: {cls.__name__}")
    names: list[str] = []
    items: list[str] = []
    scope: dict[str, Any] = {"_FACTORY": _FACTORY, "_set_dict": object.__setattr__}
    for i, f in enumerate(dataclasses.fields(cls)):
        if not f.init or f.kw_only or f._field_type is not dataclasses._FIELD:  # type: ignore[attr-defined]
            raise TypeError(f"dict_init: {cls.__name__}.{f.name} is init=False, keyword-only or not a field")
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
        items.append(f"{f.name!r}: {value}")
    source = (f"def __init__(self, {', '.join(names)}):\n"
              f"    _set_dict(self, '__dict__', {{{', '.join(items)}}})\n")
    exec(source, scope)  # as dataclasses builds its own __init__: one function per class
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)  # the signature dataclasses gave it
    cls.__init__ = init  # type: ignore[misc]
    return cls
