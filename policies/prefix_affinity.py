"""Scoring the engines of a pool for one request (pure), in prompt tokens to compute: the part of its
prompt an engine does not hold cached, plus a stated price per request already on that engine — so a
request goes where its prefix is cached unless that engine is busier than the saving is worth. Also
the comparison orders: least-loaded and round-robin."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policies.live import LiveState

# What one request running or queued on an engine costs the next one, in prompt tokens to compute.
# A hot prefix then stays on its engine until that engine has (cached tokens / 256) more requests on
# it than another: a 2,500-token system prompt ~10, a 300-token one ~1 (short prompts follow load).
LOAD_TOKENS = 256


@dataclass(frozen=True, slots=True)
class PoolMember:
    """One engine that can take the request, as the scorer sees it."""

    backend: str
    hit: float  # share of the prompt it holds cached (0..1); 0 where unknown (vLLM: load-only)
    load: int  # requests on it now, running and queued, as best known
    prompt_tokens: int = 0  # this request's prompt, counted for this engine
    occupancy: float = 0.0  # share of its cache our index fills: the tie-break that spreads new prefixes


def cost(member: PoolMember, load_tokens: float) -> float:
    """Prompt tokens it would compute for this request + `load_tokens` per request already on it."""
    return (1.0 - member.hit) * member.prompt_tokens + load_tokens * member.load


def by_affinity(members: Sequence[PoolMember], load_tokens: float = LOAD_TOKENS) -> list[PoolMember]:
    """Cheapest first; ties: the emptier cache (a new prefix goes where it evicts least), then the
    rule's order."""
    order = {m.backend: i for i, m in enumerate(members)}
    return sorted(members, key=lambda m: (round(cost(m, load_tokens), 6), m.occupancy, order[m.backend]))


def least_loaded(members: Sequence[PoolMember]) -> list[PoolMember]:
    """Fewest requests first (the rule's order on ties): the pool with the cache ignored."""
    return sorted(members, key=lambda m: m.load)  # stable: the rule's order on ties


def round_robin(members: Sequence[PoolMember], turn: int) -> list[PoolMember]:
    """The members rotated by the router's decision count: each decision starts one further on."""
    if not members:
        return []
    k = turn % len(members)
    return [*members[k:], *members[:k]]


def requests_on(live: LiveState, backend: str) -> int:
    """Running + queued on an engine now, as best known: its polled count corrected by what this
    gateway started and finished since the poll (LiveState.num_waiting's reasoning), and never fewer
    than this gateway's own in flight; 0 where its state is unknown."""
    snap = live.engine(backend)
    if snap is None:
        return 0
    mine = live.in_flight.get(backend)
    if mine is None:
        return snap.num_running + snap.num_waiting
    since = mine.num_started_since - mine.num_ended_since
    return max(0, snap.num_running + snap.num_waiting + since, mine.num)


def describe(members: Sequence[PoolMember], load_tokens: float | None) -> str:
    """`e1 hit 0.93 load 1 cost 326` per member, for the decision's reason."""
    parts = []
    for m in members:
        tail = f" cost {cost(m, load_tokens):.0f}" if load_tokens is not None else ""
        parts.append(f"{m.backend} hit {m.hit:.2f} load {m.load}{tail}")
    return ", ".join(parts)
