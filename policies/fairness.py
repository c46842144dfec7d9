"""Team fairness on a contended engine, pure: the engine's slots shared by weight between the teams
that want it, each team's claim bounded by what it recently used, and priority classes (batch
yields first). The router keeps who asked for what (DemandBook, clock passed in); strategies `judge`."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

INTERACTIVE, BATCH = "interactive", "batch"
CLASS_HEADER = "x-hybridgw-priority-class"  # a request may lower its team's class with it, never raise it
_EMPTY: Mapping[str, int] = MappingProxyType({})
_NO_CLASSES: Mapping[str, str] = MappingProxyType({})


def request_class(team_class: str, header: str | None) -> str:
    """The team's class, lowered to batch by the request's header; any other value changes nothing
    (a request never configures the server: it cannot claim interactive for a batch team)."""
    return BATCH if header is not None and header.strip().lower() == BATCH else team_class


@dataclass(frozen=True, slots=True)
class EngineTeams:
    """Who uses and who wants one engine now, as this gateway knows it."""

    held: Mapping[str, int] = field(default_factory=lambda: _EMPTY)  # team → our in-flight requests on it
    # team → class of what it asked for within the demand window (interactive if it asked for both)
    wanting: Mapping[str, str] = field(default_factory=lambda: _NO_CLASSES)
    # team → slots it may claim: the most it held within the window, plus one to grow by
    claims: Mapping[str, int] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether this request should leave the engine to others, and the numbers that said so."""

    yields: bool
    note: str


_KEEPS = Verdict(False, "within its share")


def contended(queued: int, queue_limit: int, left_blocks: int, total_blocks: int, queue_fraction: float,
              kv_free_fraction: float) -> str | None:
    """Why the engine is near its limit (a note), or None: its queue has reached `queue_fraction` of
    the limit (at least one waiting), or the KV left once this request is placed is under `kv_free_fraction`."""
    at = max(1, math.ceil(queue_limit * queue_fraction))
    if queued >= at:
        return f"queue {queued} ≥ {at}"
    if total_blocks > 0 and left_blocks < kv_free_fraction * total_blocks:
        return f"{left_blocks}/{total_blocks} KV blocks left < {kv_free_fraction:.0%}"
    return None


def judge(team: str, cls: str, weight_of: Callable[[str], float], load: EngineTeams, room: int,
          near_limit: str | None) -> Verdict:
    """Whether the request should leave the engine to others. `room`: requests like this one the
    engine can still take, this one included; `near_limit`: why it is near its limit, else None.

    The engine's slots (what the active teams hold plus the room) are shared by weight. A team at
    or over its share yields when taking a slot would leave less room than the other wanting teams
    still lack of their share, each up to its claim (so a quiet team reserves what it uses, not its
    whole share, and grows by one slot at a time while it keeps asking). A batch request yields when
    the engine is near its limit, or short that way, while any team wants it for interactive work."""
    if cls != BATCH and not any(t != team for t in load.wanting):
        return _KEEPS  # nobody else wants the engine: nothing to leave room for
    active = {*load.held, *load.wanting, team}
    total_weight = sum(weight_of(t) for t in active)
    slots = sum(load.held.get(t, 0) for t in active) + room

    def share(t: str) -> float:
        return slots * weight_of(t) / total_weight

    lacking = {t: min(share(t), load.claims.get(t, 1)) - load.held.get(t, 0) for t in sorted(load.wanting)
               if t != team}
    lacking = {t: gap for t, gap in lacking.items() if gap > 0}
    short = room - 1 < sum(lacking.values())
    if cls == BATCH and (near_limit or short):
        interactive = sorted(t for t, c in load.wanting.items() if c == INTERACTIVE and t != team)
        if interactive or load.wanting.get(team) == INTERACTIVE:
            why = near_limit or f"room for {room}"
            return Verdict(True, f"{why}: batch yields to interactive demand ({', '.join(interactive) or team})")
    mine = load.held.get(team, 0)
    if mine < share(team) or not short:
        return _KEEPS
    others = ", ".join(f"{t} holds {load.held.get(t, 0)}, lacks {gap:.3g}" for t, gap in lacking.items())
    return Verdict(True, f"{team} holds {mine} of {slots} slots, share {share(team):.3g} (weight "
                         f"{weight_of(team):g} of {total_weight:g}): at or over its share, and room for {room} "
                         f"while {others}")


class DemandBook:
    """Which teams asked for which engines, and when, and the most each held there lately
    (monotonic seconds, passed in): a quiet team keeps its claim for `window_s` between requests."""

    def __init__(self) -> None:
        self._asked: dict[str, dict[tuple[str, str], float]] = {}  # engine → (team, class) → last asked
        self._peaks: dict[str, dict[str, tuple[int, float]]] = {}  # engine → team → (most held, when)
        # The last view, for the same holds object and window, until something is noted or expires:
        # a view per request costs ~10 µs, a cache hit well under one.
        self._cached: tuple[object, float, Mapping[str, EngineTeams]] | None = None
        self._valid_until = 0.0

    def note(self, engines: Iterable[str], team: str, cls: str, now: float) -> None:
        for engine in engines:
            asked = self._asked.setdefault(engine, {})
            if (team, cls) not in asked:  # a later time for a known one only delays its expiry: the view holds
                self._cached = None
            asked[(team, cls)] = now

    def view(self, held: Mapping[str, Mapping[str, int]], now: float, window_s: float) -> Mapping[str, EngineTeams]:
        """Per engine: holds, the teams that asked within the window, and their claims (older entries are dropped)."""
        cached = self._cached
        if cached is not None and cached[0] is held and cached[1] == window_s and now < self._valid_until:
            return cached[2]
        out = self._build(held, now, window_s)
        times = [t for asked in self._asked.values() for t in asked.values()]
        times += [when for peaks in self._peaks.values() for _, when in peaks.values()]
        self._valid_until = min(times, default=float("inf")) + window_s
        self._cached = (held, window_s, out)
        return out

    def _build(self, held: Mapping[str, Mapping[str, int]], now: float, window_s: float) -> Mapping[str, EngineTeams]:
        out: dict[str, EngineTeams] = {}
        for engine in {*held, *self._asked}:
            holds = held.get(engine, _EMPTY)
            asked = {key: t for key, t in self._asked.get(engine, {}).items() if now - t <= window_s}
            self._asked[engine] = asked
            wanting: dict[str, str] = {}
            for team, cls in sorted(asked):  # "batch" < "interactive": interactive wins for a team with both
                wanting[team] = cls
            out[engine] = EngineTeams(holds, MappingProxyType(wanting), self._claims(engine, holds, wanting, now,
                                                                                     window_s))
            if not asked and not holds:
                del self._asked[engine]
                self._peaks.pop(engine, None)
                del out[engine]
        return MappingProxyType(out)

    def _claims(self, engine: str, holds: Mapping[str, int], wanting: Mapping[str, str], now: float,
                window_s: float) -> Mapping[str, int]:
        peaks = self._peaks.setdefault(engine, {})
        for team in [t for t, (_, when) in peaks.items() if now - when > window_s and t not in holds]:
            del peaks[team]
        for team, n in holds.items():
            most, when = peaks.get(team, (0, now))
            if n >= most or now - when > window_s:
                peaks[team] = (n, now)
        return MappingProxyType({t: peaks.get(t, (0, now))[0] + 1 for t in wanting})
