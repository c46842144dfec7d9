"""Text fields of a frozen, slotted dataclass that may be given as a zero-argument function and are
built on first read: a decision's `reason` is read only by refusals, traces and the explain paths,
while the gateway and the replay take every decision (formatting it was ~a fifth of decide())."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

T = TypeVar("T")


def later(build: Callable[[], str]) -> str:
    """`build` where a text field is expected: a field made lazy_fields() calls it on first read.
    (Typed as the str it stands for: readers only ever see the str.)"""
    return cast(str, build)


class _Lazy:
    """Wraps a slot: reading it builds a pending text once and keeps it. The instance stays frozen
    to its users (the dataclass's __setattr__ still refuses); only the cached text is written."""

    __slots__ = ("slot",)

    def __init__(self, slot: Any) -> None:
        self.slot = slot

    def __get__(self, obj: object, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self.slot.__get__(obj, owner)
        if value.__class__ is str or not callable(value):
            return value
        text = value()  # a pure function of values the decision already holds
        self.slot.__set__(obj, text)
        return text

    def __set__(self, obj: object, value: Any) -> None:
        self.slot.__set__(obj, value)


def lazy_fields(*names: str) -> Callable[[type[T]], type[T]]:
    """Class decorator (outside @dataclass(slots=True)): each named field accepts later(fn)."""
    def wrap(cls: type[T]) -> type[T]:
        for name in names:
            setattr(cls, name, _Lazy(cls.__dict__[name]))
        return cls
    return wrap
