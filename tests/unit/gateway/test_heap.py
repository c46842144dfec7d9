"""prepare_heap_for_serving: start-up's garbage is collected, what is left is kept out of later full
GCs, and young collections run less often."""
from __future__ import annotations

import gc
import weakref

from gateway.heap import YOUNG_THRESHOLD, prepare_heap_for_serving


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_garbage_is_collected_and_the_live_heap_frozen() -> None:
    live = Node()
    dead_a, dead_b = Node(), Node()
    dead_a.other, dead_b.other = dead_b, dead_a  # a cycle only the cyclic GC can free
    gone = weakref.ref(dead_a)
    del dead_a, dead_b
    thresholds = gc.get_threshold()
    try:
        frozen = prepare_heap_for_serving()
        assert gone() is None  # collected before the freeze, not kept for good
        assert frozen == gc.get_freeze_count() > 0
        assert not any(o is live for o in gc.get_objects())  # a full collection no longer walks it
        assert gc.get_threshold() == (YOUNG_THRESHOLD, *thresholds[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert any(o is live for o in gc.get_objects())
