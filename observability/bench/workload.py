"""What a run sends: the talk's four ISL/OSL query patterns (and `mixed`), shared-prefix tenants,
several teams' keys, turned into a seeded list of frozen `RequestPlan`s and their JSON bodies."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, overload

import orjson

from observability.bench.lengths import Length, Normal, scaled
from observability.bench.prompts import PromptBuilder

LONG_IN, SHORT_IN = Normal(2000, 200), Normal(200, 20)
LONG_OUT, SHORT_OUT = Normal(1000, 100), Normal(100, 20)
# The talk's query patterns: summarisation / RAG, long reports, generation, chat / classification.
PATTERNS: dict[str, tuple[Length, Length]] = {
    "long-in-short-out": (LONG_IN, SHORT_OUT),
    "long-in-long-out": (LONG_IN, LONG_OUT),
    "short-in-long-out": (SHORT_IN, LONG_OUT),
    "short-in-short-out": (SHORT_IN, SHORT_OUT),
}
PRESETS = (*PATTERNS, "mixed")
T = TypeVar("T")


@dataclass(frozen=True)
class Team:
    name: str
    api_key: str | None


@dataclass(frozen=True)
class WorkloadSpec:
    preset: str = "mixed"
    isl: Length | None = None  # overrides the preset's input length (pattern "custom")
    osl: Length | None = None
    length_scale: float = 1.0  # every preset length × this (small prompts for a CPU engine)
    tenants: int = 0  # shared system prompts ...
    prefix_tokens: int = 0  # ... of this many tokens each
    teams: tuple[Team, ...] = (Team("default", None),)
    ignore_eos: bool = False
    seed: int = 0


@dataclass(frozen=True)
class RequestPlan:
    index: int
    pattern: str
    team: Team
    tenant: int | None
    prefix: str  # the tenant's shared prompt ("" without tenants)
    tail: str  # this request's own text
    isl: int  # prompt tokens by our tokenizer: prefix + tail (chat framing not counted)
    osl: int  # max_tokens asked for


def _lengths(spec: WorkloadSpec, rng: random.Random) -> tuple[str, Length, Length]:
    if spec.isl is not None or spec.osl is not None:
        base_in, base_out = PATTERNS["short-in-short-out"]
        return (
            "custom",
            spec.isl or scaled(base_in, spec.length_scale),
            spec.osl or scaled(base_out, spec.length_scale),
        )
    name = rng.choice(list(PATTERNS)) if spec.preset == "mixed" else spec.preset
    isl, osl = PATTERNS[name]
    return name, scaled(isl, spec.length_scale), scaled(osl, spec.length_scale)


class Lazy(Sequence[T]):
    """Items built when first asked for, from their index alone: a long run never holds every
    prompt at once, and slicing (a sweep level, the warm-up) builds nothing."""

    def __init__(self, build: Callable[[int], T], start: int, stop: int) -> None:
        self.build, self.start, self.stop = build, start, max(start, stop)

    def __len__(self) -> int:
        return self.stop - self.start

    @overload
    def __getitem__(self, index: int) -> T: ...
    @overload
    def __getitem__(self, index: slice) -> Lazy[T]: ...
    def __getitem__(self, index: int | slice) -> T | Lazy[T]:
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            if step != 1:
                raise ValueError("only contiguous slices")
            return Lazy(self.build, self.start + lo, self.start + hi)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.build(self.start + index)


def build_plans(spec: WorkloadSpec, count: int, builder: PromptBuilder) -> Lazy[RequestPlan]:
    """`count` requests; request i is the same for the same spec, seed and i (prompts included),
    whatever else is built."""
    if spec.preset not in PRESETS:
        raise ValueError(f"unknown preset {spec.preset!r}: one of {', '.join(PRESETS)}")
    rng = random.Random(spec.seed)
    prefixes = (
        [builder.text(spec.prefix_tokens, rng) for _ in range(spec.tenants)] if spec.prefix_tokens else []
    )

    def plan(i: int) -> RequestPlan:
        r = random.Random(f"{spec.seed}/{i}")  # a str seed is hashed (sha512): stable across runs
        pattern, isl_dist, osl_dist = _lengths(spec, r)
        isl, osl = isl_dist.sample(r), osl_dist.sample(r)
        tenant = r.randrange(len(prefixes)) if prefixes else None
        prefix = prefixes[tenant] if tenant is not None else ""
        tail_tokens = max(1, isl - spec.prefix_tokens) if prefix else isl
        team = spec.teams[i % len(spec.teams)]
        return RequestPlan(
            i,
            pattern,
            team,
            tenant,
            prefix,
            builder.text(tail_tokens, r),
            (spec.prefix_tokens if prefix else 0) + tail_tokens,
            osl,
        )

    return Lazy(plan, 0, count)


def request_body(plan: RequestPlan, model: str, endpoint: str, ignore_eos: bool) -> bytes:
    """The streamed OpenAI body for one plan; usage is asked for in the last chunk."""
    body: dict[str, object] = {
        "model": model,
        "max_tokens": plan.osl,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if endpoint == "chat":
        messages = [{"role": "system", "content": plan.prefix}] if plan.prefix else []
        body["messages"] = [*messages, {"role": "user", "content": plan.tail}]
    else:
        body["prompt"] = plan.prefix + plan.tail
    if ignore_eos:  # vLLM / SGLang / our engine honour these; hosted APIs ignore or refuse them
        body["ignore_eos"] = True
        body["min_tokens"] = plan.osl
    return orjson.dumps(body)
