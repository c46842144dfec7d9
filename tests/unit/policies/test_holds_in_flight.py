"""HoldBook.in_flight keeps its counts as holds come and go (no walk over every hold per decision):
on random sequences of adds, releases, snapshots (forward, repeated, backward, missing) and
released_since calls, it answers exactly what the definition gives (counts and the prompt tokens sent
since), computed here from scratch."""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from policies.holds import Hold, HoldBook
from policies.live import EngineSnapshot, InFlight

BACKENDS = ("a", "b", "c")


@dataclass
class Model:
    """The definition: every hold in flight, every release not yet forgotten by released_since."""

    active: dict[int, Hold] = field(default_factory=dict)
    released: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (started, released)

    def released_since(self, snapshots: dict[str, EngineSnapshot]) -> None:
        for backend in list(self.released):
            snap = snapshots.get(backend)
            taken_at = snap.taken_at if snap is not None else float("inf")
            kept = [r for r in self.released[backend] if r[1] > taken_at]
            if kept:
                self.released[backend] = kept
            else:
                del self.released[backend]

    def in_flight(self, snapshots: dict[str, EngineSnapshot]) -> dict[str, InFlight]:
        counts: dict[str, list[int]] = {}
        for hold in self.active.values():
            snap = snapshots.get(hold.backend)
            entry = counts.setdefault(hold.backend, [0, 0, 0, 0, 0.0])
            entry[0] += 1
            since = snap is not None and hold.started_at > snap.taken_at
            entry[1] += int(since)
            entry[3] += hold.prompt_tokens if since else 0
            if since and (entry[1] == 1 or hold.started_at < entry[4]):
                entry[4] = hold.started_at  # the first of those since
        for backend, released in self.released.items():
            snap = snapshots.get(backend)
            if snap is not None:
                ended = sum(1 for start, end in released if start <= snap.taken_at < end)
                if ended:
                    counts.setdefault(backend, [0, 0, 0, 0, 0.0])[2] += ended
        return {b: InFlight(*c) for b, c in counts.items()}


def _snapshots(rng: random.Random, now: float) -> dict[str, EngineSnapshot]:
    return {b: EngineSnapshot(taken_at=round(now - rng.choice((0.0, 0.5, 1.0, 2.0, 5.0, rng.uniform(0, 8))), 1))
            for b in BACKENDS if rng.random() < 0.85}


@pytest.mark.parametrize("seed", range(40))
def test_in_flight_counts_match_the_definition_on_random_sequences(seed: int) -> None:
    rng = random.Random(seed)
    book, model, now = HoldBook(), Model(), 100.0
    holds: list[Hold] = []
    snapshots = _snapshots(rng, now)
    for _ in range(600):
        now += rng.choice((0.0, 0.0, 0.1, 0.3, 1.0))  # ties on purpose: bounds are where counts go wrong
        step = rng.random()
        if step < 0.35:
            start = now - (rng.choice((0.0, 0.5, 2.0)) if rng.random() < 0.1 else 0.0)  # now and then out of order
            # Prompt sizes from a short list: holds started at the same moment with different sizes.
            hold = book.add(rng.choice(BACKENDS), rng.randint(1, 9), start, prompt_tokens=rng.choice((0, 7, 300)))
            holds.append(hold)
            model.active[hold.hold_id] = hold
        elif step < 0.6 and holds:
            hold = rng.choice(holds)  # sometimes one already released: idempotent
            if model.active.pop(hold.hold_id, None) is not None:
                model.released.setdefault(hold.backend, []).append((hold.started_at, now))
            book.release(hold, now)
        elif step < 0.7:
            snapshots = _snapshots(rng, now)  # a poll: newer, the same, older or missing per engine
        elif step < 0.8:
            seen = snapshots if rng.random() < 0.7 else _snapshots(rng, now)
            book.released_since(seen)
            model.released_since(seen)
        assert dict(book.in_flight(snapshots)) == model.in_flight(snapshots)


class Moment(float):
    """A start time that counts how often it is compared: the work a decision does per hold."""

    compared = 0

    def _count(self, other: object, op: str) -> bool:
        Moment.compared += 1
        return bool(getattr(float, op)(self, other))

    def __lt__(self, other: object) -> bool:
        return self._count(other, "__lt__")

    def __le__(self, other: object) -> bool:
        return self._count(other, "__le__")

    def __gt__(self, other: object) -> bool:
        return self._count(other, "__gt__")

    def __ge__(self, other: object) -> bool:
        return self._count(other, "__ge__")


def test_a_decision_does_not_walk_every_hold() -> None:
    book = HoldBook()
    for i in range(2000):
        book.add(BACKENDS[i % 2], 4, Moment(100.0 + i))
    snapshots = {b: EngineSnapshot(taken_at=1100.0) for b in BACKENDS}
    Moment.compared = 0
    for _ in range(100):  # a hundred decisions between two polls
        assert book.in_flight(snapshots)["b"] == InFlight(1000, 500, 0, 0, 1101.0)  # started 1101, 1103, …, 2099
    assert Moment.compared < 100  # a bisect per engine at the new snapshot (old: 2,000 per decision)
