"""The embedded shared limiter's counters: all-or-nothing charges, settles, restore, sweeping."""
from __future__ import annotations

from observability.counts_server import answer
from observability.window_counts import SWEEP_AT, WindowCharge, WindowCounts


def test_a_charge_lands_in_every_window_or_in_none() -> None:
    counts = WindowCounts()
    assert counts.charge([WindowCharge("a", 3, 5, 100.0), WindowCharge("b", 1, 2, 100.0)], 0.0) == (None, [0, 0])
    assert counts.charge([WindowCharge("a", 1, 5, 100.0), WindowCharge("b", 2, 2, 100.0)], 0.0) == (1, [3, 1])
    assert counts.read(["a", "b"]) == [3, 1]  # the refused charge added nothing, not even to "a"


def test_a_charge_of_nothing_never_overflows_and_settles_only_touch_live_windows() -> None:
    counts = WindowCounts()
    counts.restore({"usd": (10, 100.0)})
    assert counts.charge([WindowCharge("usd", 0, 5, 100.0)], 0.0) == (None, [10])  # a $0 request is served
    counts.add([("usd", -4), ("gone", 7)])
    assert counts.read(["usd", "gone"]) == [6, 0]


def test_ended_windows_are_swept_once_many_are_held() -> None:
    counts = WindowCounts()
    counts.restore({f"old{i}": (1, 10.0) for i in range(SWEEP_AT)})
    counts.charge([WindowCharge("new", 1, 5, 100.0)], 50.0)
    assert len(counts) == 1 and counts.read(["new"]) == [1]


def test_the_wire_ops_map_onto_the_counts() -> None:
    counts = WindowCounts()
    status = {"count": 2}
    assert answer(counts, ["c", [["k", 2, 3, 100.0]]], lambda: status) == [None, [0]]
    assert answer(counts, ["c", [["k", 2, 3, 100.0]]], lambda: status) == [0, [2]]
    assert answer(counts, ["a", [["k", -1]]], lambda: status) is None  # a settle has no answer
    assert answer(counts, ["r", ["k"]], lambda: status) == [1]
    assert answer(counts, ["s"], lambda: status) == status
