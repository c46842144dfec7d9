"""Scoring the engines of a pool for one request (pure): the cached share of its prompt against the
requests already on each engine, so that a request goes where its prefix is cached unless that engine
is busier than the saving is worth. Also the comparison orders: least-loaded and round-robin."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from policies.live import LiveState

PREFIX_WEIGHT = 1.0
LOAD_WEIGHT = 0.25


@dataclass(frozen=True, slots=True)
class PoolMember:
    """One engine that can take the request, as the scorer sees it."""

    backend: str
    hit: float  # share of the prompt it holds cached (0..1); 0 where unknown (vLLM: load-only)
    load: int  # requests on it now, running and queued, as best known
    occupancy: float = 0.0  # share of its cache our index fills: the tie-break that spreads new prefixes


@dataclass(frozen=True, slots=True)
class Weights:
    """score = prefix × hit − load × requests on the engine. With the defaults a fully cached prompt
    is worth four requests ahead of it: a hot prefix stays on its engine until that engine has about
    four more requests than another, then spills over (and gets cached there too)."""

    prefix: float = PREFIX_WEIGHT
    load: float = LOAD_WEIGHT


def score(member: PoolMember, weights: Weights) -> float:
    return weights.prefix * member.hit - weights.load * member.load


def by_affinity(members: Sequence[PoolMember], weights: Weights) -> list[PoolMember]:
    """Best score first; ties: the emptier cache (a new prefix goes where it evicts least), then the
    rule's order."""
    order = {m.backend: i for i, m in enumerate(members)}
    return sorted(members, key=lambda m: (-round(score(m, weights), 9), m.occupancy, order[m.backend]))


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


def describe(members: Sequence[PoolMember], weights: Weights | None) -> str:
    """`e1 hit 0.93 load 1 score 0.68` per member, for the decision's reason."""
    parts = []
    for m in members:
        tail = f" score {score(m, weights):.2f}" if weights is not None else ""
        parts.append(f"{m.backend} hit {m.hit:.2f} load {m.load}{tail}")
    return ", ".join(parts)
