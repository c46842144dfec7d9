"""quality_floor: hard requests skip the local model. Easy ones (difficulty ≤ `max_difficulty`) go
as kv_fit sends them; a harder one (or one not scored) goes to `spill` only — to `local` as a
fallback after it when `hard_to_local` is true, else never."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from policies.strategies.base import Context, Outcome
from policies.strategies.kv_fit import LocalSpillRule, kv_fit


class QualityFloorRule(LocalSpillRule):
    uses_difficulty: ClassVar[bool] = True

    strategy: Literal["quality_floor"]
    max_difficulty: float = Field(ge=0.0, le=1.0)  # P(the local answer is not good enough) above which: hosted
    hard_to_local: bool = False


def quality_floor(rule: QualityFloorRule, ctx: Context) -> Outcome | None:
    """Easy (difficulty ≤ max_difficulty): as kv_fit — local if it fits, else spill. Hard, or not
    scored: spill only; local after it only when the rule says `hard_to_local`."""
    score, floor = ctx.facts.difficulty, rule.max_difficulty
    if score is not None and score <= floor:
        easy = kv_fit(rule, ctx)
        return None if easy is None else Outcome(easy.backends, f"difficulty {score:.2f} ≤ {floor:g}: {easy.reason}",
                                                 easy.refusal, easy.retry_after_s)
    why = f"difficulty {score:.2f} > {floor:g}" if score is not None else "difficulty not scored"
    hosted = tuple(b for b in rule.spill if b in ctx.usable)  # open circuits: decide() drops them, or refuses
    if rule.hard_to_local:
        local = kv_fit(rule.model_copy(update={"spill": []}), ctx)
        fallback = local.backends if local is not None else ()
        if not hosted and local is not None and not fallback:
            return Outcome((), f"{why}, no hosted backend: {local.reason}", local.refusal, local.retry_after_s)
        backends = (*hosted, *fallback)
        return Outcome(backends, f"{why}: {', '.join(backends)} (local allowed as fallback)") if backends else None
    if hosted:
        return Outcome(hosted, f"{why}: hosted {', '.join(hosted)}")
    if not any(b in ctx.usable for b in rule.local):
        return None
    return Outcome((), f"{why}: no hosted backend for this team, and the rule keeps hard requests off the local "
                       "model (hard_to_local: false)", "not_allowed")
