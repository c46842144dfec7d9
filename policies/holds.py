"""KV blocks this gateway holds on engines for its in-flight requests (one hold per request), the holds
given back since an engine's last polled state (which still counts them as used), and the requests in
flight relative to that state. Pure: the caller passes the time.

in_flight() runs for every routing decision, so it walks no holds: each engine keeps its holds' start
times sorted and its counts relative to the last snapshot time asked about, kept up to date by
add/release; a new snapshot costs one bisect and a walk over the releases since it."""
from __future__ import annotations

import bisect
import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from policies.live import EngineSnapshot, InFlight

_NONE: Mapping[str, int] = MappingProxyType({})
_NO_FLIGHTS: Mapping[str, InFlight] = MappingProxyType({})
_NONE_BY_TEAM: Mapping[str, Mapping[str, int]] = MappingProxyType({})


@dataclass(frozen=True)
class Hold:
    """KV blocks reserved on an engine for one in-flight request."""

    hold_id: int
    backend: str
    blocks: int
    started_at: float = 0.0  # monotonic
    team: str = ""  # whose request (team fairness counts what each team holds per engine)
    prompt_tokens: int = 0  # what the engine has to prefill for it (the router's queue estimate)


@dataclass(frozen=True, slots=True)
class _Released:
    started_at: float
    released_at: float
    blocks: int


@dataclass(slots=True)
class _Flights:
    """One engine's holds in flight: their start times, sorted, and how many started / ended relative
    to the snapshot time `taken_at` (None: not counted yet, or no longer valid)."""

    starts: list[float]
    tokens: list[int]  # the prompt tokens of each, in the order of `starts`
    taken_at: float | None = None
    started: int = 0  # in flight, started after taken_at
    ended: int = 0  # started at or before taken_at, released after it
    started_tokens: int = 0  # the prompt tokens of those `started`

    def add(self, start: float, tokens: int) -> None:
        if not self.starts or start >= self.starts[-1]:  # the clock is monotonic: nearly always
            self.starts.append(start)
            self.tokens.append(tokens)
        else:
            at = bisect.bisect_right(self.starts, start)
            self.starts.insert(at, start)
            self.tokens.insert(at, tokens)
        if self.taken_at is not None and start > self.taken_at:
            self.started += 1
            self.started_tokens += tokens

    def remove(self, start: float, now: float, tokens: int) -> None:
        at = bisect.bisect_left(self.starts, start)
        while self.tokens[at] != tokens and at + 1 < len(self.starts) and self.starts[at + 1] == start:
            at += 1  # holds started at the same moment: take one of this size
        del self.starts[at], self.tokens[at]
        taken_at = self.taken_at
        if taken_at is None:
            return
        if start > taken_at:
            self.started -= 1
            self.started_tokens -= tokens
        elif taken_at < now:
            self.ended += 1


class HoldBook:
    def __init__(self) -> None:
        self._holds: dict[int, Hold] = {}
        self._reserved: dict[str, int] = {}
        self._released: dict[str, list[_Released]] = {}  # per engine, in the order released
        self._flights: dict[str, _Flights] = {}
        self._ids = itertools.count(1)
        self._by_team: dict[str, dict[str, int]] = {}  # backend → team → holds
        self._by_team_view: Mapping[str, Mapping[str, int]] | None = None  # rebuilt after a change

    def add(self, backend: str, blocks: int, now: float, team: str = "", prompt_tokens: int = 0) -> Hold:
        hold = Hold(next(self._ids), backend, blocks, now, team, prompt_tokens)
        self._holds[hold.hold_id] = hold
        self._reserved[backend] = self._reserved.get(backend, 0) + blocks
        flights = self._flights.get(backend)
        if flights is None:
            flights = self._flights[backend] = _Flights([], [])
        flights.add(now, prompt_tokens)
        teams = self._by_team.setdefault(backend, {})
        teams[team] = teams.get(team, 0) + 1
        self._by_team_view = None
        return hold

    def release(self, hold: Hold | None, now: float) -> None:
        """Give the blocks back (idempotent; None is ignored)."""
        if hold is None or self._holds.pop(hold.hold_id, None) is None:
            return
        left = self._reserved.get(hold.backend, 0) - hold.blocks
        if left > 0:
            self._reserved[hold.backend] = left
        else:
            self._reserved.pop(hold.backend, None)
        teams = self._by_team[hold.backend]
        teams[hold.team] -= 1
        if not teams[hold.team]:
            del teams[hold.team]
            if not teams:
                del self._by_team[hold.backend]
        self._by_team_view = None
        self._released.setdefault(hold.backend, []).append(_Released(hold.started_at, now, hold.blocks))
        self._flights[hold.backend].remove(hold.started_at, now, hold.prompt_tokens)

    def reserved(self) -> Mapping[str, int]:
        return MappingProxyType(dict(self._reserved)) if self._reserved else _NONE

    def by_team(self) -> Mapping[str, Mapping[str, int]]:
        """Per engine, team → its requests in flight there now (the same object until one changes)."""
        if self._by_team_view is None:
            self._by_team_view = MappingProxyType({b: MappingProxyType(dict(t)) for b, t in self._by_team.items()}) \
                if self._by_team else _NONE_BY_TEAM
        return self._by_team_view

    def released_since(self, snapshots: Mapping[str, EngineSnapshot]) -> Mapping[str, int]:
        """Per engine, the blocks of holds that were in flight when its snapshot was taken and have
        been released after it. Without this a request that follows a finished one within a poll
        interval would see the finished request's blocks as still used, and spill for nothing."""
        if not self._released:
            return _NONE
        out: dict[str, int] = {}
        for backend in list(self._released):
            snap = snapshots.get(backend)
            # Releases before the snapshot are already in it; with no snapshot there is nothing to correct.
            taken_at = snap.taken_at if snap is not None else float("inf")
            kept = [r for r in self._released[backend] if r.released_at > taken_at]
            if len(kept) < len(self._released[backend]):
                self._flights[backend].taken_at = None  # its ended count may have lost some: count again
            if not kept:
                del self._released[backend]
                continue
            self._released[backend] = kept
            blocks = sum(r.blocks for r in kept if r.started_at <= taken_at)
            if blocks:
                out[backend] = blocks
        return MappingProxyType(out) if out else _NONE

    def in_flight(self, snapshots: Mapping[str, EngineSnapshot]) -> Mapping[str, InFlight]:
        """Per engine, our requests in flight now, and how many started / ended since its snapshot
        (what the engine's polled queue cannot yet show; LiveState.num_waiting combines them)."""
        if not self._holds and not self._released:
            return _NO_FLIGHTS
        out: dict[str, InFlight] = {}
        for backend, flights in self._flights.items():
            snap = snapshots.get(backend)
            started = ended = tokens = 0
            if snap is not None:
                if flights.taken_at != snap.taken_at:
                    self._count(backend, flights, snap.taken_at)
                started, ended, tokens = flights.started, flights.ended, flights.started_tokens
            if flights.starts or ended:
                # The last `started` of the sorted starts are those since the snapshot: the first of them.
                first = flights.starts[-started] if started > 0 else 0.0
                out[backend] = InFlight(len(flights.starts), started, ended, tokens, first)
        return MappingProxyType(out)

    def _count(self, backend: str, flights: _Flights, taken_at: float) -> None:
        """Count from scratch relative to a new snapshot time (once per poll of the engine)."""
        flights.taken_at = taken_at
        since = bisect.bisect_right(flights.starts, taken_at)
        flights.started = len(flights.starts) - since
        flights.started_tokens = sum(flights.tokens[since:])
        flights.ended = sum(1 for r in self._released.get(backend, ()) if r.started_at <= taken_at < r.released_at)
