"""Token-length distributions for a workload (fixed, normal, uniform, mixture), parsed from the
command line's short spec strings and sampled with a caller's seeded `random.Random`."""

from __future__ import annotations

import random
from dataclasses import dataclass


class LengthSpecError(ValueError):
    """A length spec the user wrote that we cannot read; the message says what is allowed."""


HELP = (
    "fixed:N | normal:MEAN,SD | uniform:LO,HI | mix:W@SPEC|W@SPEC... "
    "(e.g. mix:0.7@fixed:128|0.3@normal:2048,256)"
)


@dataclass(frozen=True)
class Fixed:
    value: int

    def sample(self, rng: random.Random) -> int:
        return self.value

    @property
    def mean(self) -> float:
        return float(self.value)


@dataclass(frozen=True)
class Normal:
    mean_: float
    sd: float

    def sample(self, rng: random.Random) -> int:
        return max(1, round(rng.gauss(self.mean_, self.sd)))

    @property
    def mean(self) -> float:
        return self.mean_


@dataclass(frozen=True)
class Uniform:
    lo: int
    hi: int

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.lo, self.hi)

    @property
    def mean(self) -> float:
        return (self.lo + self.hi) / 2


@dataclass(frozen=True)
class Mixture:
    weights: tuple[float, ...]
    parts: tuple[Length, ...]

    def sample(self, rng: random.Random) -> int:
        return rng.choices(self.parts, weights=self.weights)[0].sample(rng)

    @property
    def mean(self) -> float:
        return sum(w * p.mean for w, p in zip(self.weights, self.parts)) / sum(self.weights)


Length = Fixed | Normal | Uniform | Mixture


def scaled(length: Length, factor: float) -> Length:
    """The same shape with every token count multiplied (presets shrunk for a CPU engine)."""
    if factor == 1:
        return length
    if isinstance(length, Fixed):
        return Fixed(max(1, round(length.value * factor)))
    if isinstance(length, Normal):
        return Normal(max(1.0, length.mean_ * factor), length.sd * factor)
    if isinstance(length, Uniform):
        return Uniform(max(1, round(length.lo * factor)), max(1, round(length.hi * factor)))
    return Mixture(length.weights, tuple(scaled(p, factor) for p in length.parts))


def parse_length(spec: str) -> Length:
    kind, _, rest = spec.strip().partition(":")
    try:
        if kind == "mix":
            return _parse_mix(rest)
        numbers = [float(x) for x in rest.split(",")] if rest else []
        if kind == "fixed" and len(numbers) == 1 and numbers[0] >= 1:
            return Fixed(int(numbers[0]))
        if kind == "normal" and len(numbers) == 2 and numbers[0] >= 1 and numbers[1] >= 0:
            return Normal(numbers[0], numbers[1])
        if kind == "uniform" and len(numbers) == 2 and 1 <= numbers[0] <= numbers[1]:
            return Uniform(int(numbers[0]), int(numbers[1]))
        if kind.isdigit() and not rest:  # a bare number is a fixed length
            return Fixed(int(kind))
    except ValueError:
        pass
    raise LengthSpecError(f"cannot read length {spec!r}: expected {HELP}")


def _parse_mix(rest: str) -> Mixture:
    weights, parts = [], []
    for item in rest.split("|"):
        weight, sep, inner = item.partition("@")
        if not sep or float(weight) <= 0 or inner.startswith("mix"):
            raise ValueError(item)
        weights.append(float(weight))
        parts.append(parse_length(inner))
    if not parts:
        raise ValueError(rest)
    return Mixture(tuple(weights), tuple(parts))
