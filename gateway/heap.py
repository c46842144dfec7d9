"""The gateway's heap once start-up is done: what start-up built (modules, the app, the policy) is moved
out of the cyclic GC's sight, and young collections run less often (docs/benchmarks.md "Hot path")."""
from __future__ import annotations

import gc
import os

from gateway.heap_dump import install_heap_dump

# Allocations between young collections (CPython's default: 700). Per request, --gc in bench/hot_path.py:
# 700 → 2,000 took the loop's GC time 72 → 41 µs with shorter longest pauses (11 → 6 ms); 10,000 gave
# 35 µs but 21 ms pauses, as each young collection then walks more survivors.
YOUNG_THRESHOLD = 2_000


def prepare_heap_for_serving() -> int:
    """Collect start-up's garbage, freeze what is left (gc.freeze) and raise the young threshold;
    returns the objects frozen.

    A full collection walked the ~100,000 start-up objects every time (~60 ms on the event loop here);
    frozen, it walks only what requests left behind (~5 ms). Frozen objects are still freed by reference
    counting; only a reference cycle among them would now outlive its use."""
    install_heap_dump(os.environ)  # soak diagnostics, off unless HYBRIDGW_HEAP_DUMP is set (gateway/heap_dump.py)
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_freeze_count()
