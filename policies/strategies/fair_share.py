"""The strategies' door to team fairness: whether this request should leave a contended engine to
teams under their share (policies/fairness.py), with the numbers for the decision's reason."""
from __future__ import annotations

from collections.abc import Mapping

from policies.fairness import BATCH, CLASS_HEADER, EngineTeams, Verdict, contended, judge, request_class
from policies.strategies.base import Context

_NOBODY = EngineTeams()


def _queue_room(ctx: Context, backend: str, queued: int, queue_limit: int) -> int:
    """Requests the engine can still take by its running slots and queue limit, this one included
    (slots free as far as our in-flight requests tell; unknown slots count as none)."""
    snap, mine = ctx.live.engine(backend), ctx.live.in_flight.get(backend)
    slots = snap.max_num_seqs if snap is not None else 0
    free_slots = max(0, slots - (mine.num if mine is not None else 0)) if slots else 0
    return queue_limit - queued + 1 + free_slots


def _only(team: str, wanting: Mapping[str, str]) -> bool:
    """No team but `team` wants the engine."""
    return not wanting or (len(wanting) == 1 and team in wanting)


def fair_share(ctx: Context, backend: str, queued: int, queue_limit: int, free_blocks: int, need: int,
               total_blocks: int) -> Verdict | None:
    """A yielding verdict for an engine that would otherwise take the request; None when it keeps it
    (fairness off, or the team within its share, or room enough for every team's share)."""
    settings = ctx.policy.policy.fairness
    if not settings.enabled:
        return None
    team = ctx.facts.team
    cls = request_class(ctx.policy.team(team).priority_class, ctx.facts.headers.get(CLASS_HEADER))
    load = ctx.live.teams.get(backend, _NOBODY)
    if cls != BATCH and _only(team, load.wanting):
        return None  # nobody else wants the engine (the common case): nothing to weigh
    # The smaller of the rule's queue limit and the backend's (slo_cost passes none of its own).
    queue_limit = min(queue_limit, ctx.policy.policy.backends[backend].max_waiting)
    near = contended(queued, queue_limit, free_blocks - need, total_blocks, settings.queue_fraction,
                     settings.kv_free_fraction)
    room = max(1, min(free_blocks // max(need, 1), _queue_room(ctx, backend, queued, queue_limit)))
    verdict = judge(team, cls, lambda t: ctx.policy.team(t).share, load, room, near)
    return verdict if verdict.yields else None
