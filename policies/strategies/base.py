"""What every strategy receives (one request's context) and returns (an ordered outcome), and the
small helpers they share. No runtime imports of the policy modules: the rule models built on this
are part of the policy schema."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from observability.fast_init import fast_init
from policies.lazy_text import lazy_fields

if TYPE_CHECKING:  # the compiled policy imports the schema, which imports the strategies
    from policies.compiled import AliasInfo, CompiledPolicy
    from policies.decision import RequestFacts
    from policies.live import LiveState


@fast_init  # one per request (observability/fast_init.py)
@dataclass(frozen=True, slots=True)
class Context:
    policy: CompiledPolicy
    alias: AliasInfo
    facts: RequestFacts
    live: LiveState
    usable: frozenset[str]  # backends with a deployment of the alias that the team may use


@lazy_fields("reason")
@fast_init
@dataclass(frozen=True, slots=True)
class Outcome:
    backends: tuple[str, ...]
    reason: str  # may be given as later(fn): built when read (policies/lazy_text.py)
    refusal: str = ""
    retry_after_s: float = 0.0
    # slo_cost's hysteresis: (backend, SLO seconds) → out after this decision; the router keeps it.
    slo_out: tuple[tuple[tuple[str, float], bool], ...] = ()
    # slo_cost: (engine, the performance model's own TTFT figure) — the router learns its error from it.
    predicted: tuple[tuple[str, float], ...] = ()


def is_open(ctx: Context, backend: str) -> bool:
    return ctx.live.health_of(backend).state == "open"


def closed_note(ctx: Context, backend: str) -> str:
    return f"{backend}: {'unreachable' if ctx.live.health_of(backend).unreachable else 'circuit open'}"


def show(value: float | None, fmt: str) -> str:
    return "?" if value is None else fmt.format(value)
