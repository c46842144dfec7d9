"""KV holds: what in-flight requests reserve, and the correction for requests that finished after
the engine's last polled state (which still counts their blocks as used)."""
from __future__ import annotations

from dataclasses import replace

from policies.holds import HoldBook

from .support import NOW, engine, live


def test_reserve_and_release_are_counted_per_engine() -> None:
    book = HoldBook()
    a, b = book.add("local", 9, NOW), book.add("local", 4, NOW)
    assert dict(book.reserved()) == {"local": 13}
    book.release(a, NOW)
    book.release(a, NOW)  # idempotent
    book.release(None, NOW)
    assert dict(book.reserved()) == {"local": 4}
    book.release(b, NOW)
    assert dict(book.reserved()) == {}


def test_a_request_finished_since_the_snapshot_no_longer_counts_as_used() -> None:
    book = HoldBook()
    hold = book.add("local", 9, NOW - 1.0)  # in flight when the snapshot was taken (NOW - 0.1)
    snap = engine(free=7, total=16, age=0.1)
    book.release(hold, NOW)
    state = replace(live({"local": snap}), released_blocks=book.released_since({"local": snap}))
    assert state.free_blocks("local") == 16  # not 7: those 9 blocks were ours and are free now
    newer = engine(free=16, total=16, age=0.0)  # the next poll already shows them free
    assert dict(book.released_since({"local": newer})) == {}


def test_a_request_that_started_after_the_snapshot_is_not_subtracted() -> None:
    book = HoldBook()
    snap = engine(free=7, total=16, age=0.5)  # 9 blocks used by someone else
    book.release(book.add("local", 4, NOW - 0.2), NOW)  # short request, never seen by a poll
    assert dict(book.released_since({"local": snap})) == {}
    state = replace(live({"local": snap}), released_blocks=book.released_since({"local": snap}))
    assert state.free_blocks("local") == 7


def test_in_flight_reservations_still_bound_free_blocks() -> None:
    book = HoldBook()
    done = book.add("local", 9, NOW - 1.0)
    book.add("local", 12, NOW - 0.05)  # in flight, not yet allocated by the engine
    snap = engine(free=7, total=16, age=0.1)
    book.release(done, NOW)
    state = replace(live({"local": snap}, reserved=dict(book.reserved())),
                    released_blocks=book.released_since({"local": snap}))
    assert state.free_blocks("local") == 4
