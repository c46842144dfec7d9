"""The gateway's heap once start-up is done: what start-up built (modules, the app, the policy) is moved
out of the cyclic GC's sight, young collections run less often (docs/benchmarks.md "Hot path"), and
glibc's mmap threshold is fixed (docs/benchmarks.md "Soak")."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
from collections.abc import Mapping

from gateway.heap_dump import install_heap_dump

# Allocations between young collections (CPython's default: 700). Per request, --gc in bench/hot_path.py:
# 700 → 2,000 took the loop's GC time 72 → 41 µs with shorter longest pauses (11 → 6 ms); 10,000 gave
# 35 µs but 21 ms pauses, as each young collection then walks more survivors. Once no request left a
# reference cycle (session 14), 2,000 → 5,000 took the young GC 35 → 15 µs a request and the longest pause
# 11.6 → 8.8 ms (bench/thread_cpu_split.py, docs/benchmarks.md "The young GC's threshold, again").
YOUNG_THRESHOLD = 5_000
# glibc's starting value, kept: a block this large or larger is its own mmap, unmapped when freed.
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)


def prepare_heap_for_serving() -> int:
    """Collect start-up's garbage, freeze what is left (gc.freeze) and raise the young threshold;
    returns the objects frozen.

    A full collection walked the ~100,000 start-up objects every time (~60 ms on the event loop here);
    frozen, it walks only what requests left behind (~5 ms). Frozen objects are still freed by reference
    counting; only a reference cycle among them would now outlive its use."""
    fix_mmap_threshold(os.environ)
    install_heap_dump(os.environ)  # soak diagnostics, off unless HYBRIDGW_HEAP_DUMP is set (gateway/heap_dump.py)
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_freeze_count()


def fix_mmap_threshold(environ: Mapping[str, str]) -> bool:
    """Keep glibc's mmap threshold at 128 KiB instead of letting it rise; True when set (glibc only,
    and not where MALLOC_MMAP_THRESHOLD_ already says otherwise).

    glibc raises the threshold to the size of each mmapped block freed (up to 32 MiB): after the Redis
    cluster clients' first slot-map refresh (a new 16,384-slot dict, ~576 KiB, each time) such blocks
    came from the threads' malloc arenas instead, grew and fragmented them, and their free memory stayed
    resident: RSS stepped +8 MB at a node's first outage and +1.5–3 MB at later ones, with Python's own
    objects flat. Fixed, the step was +0.5 MB (bench/soak_heap.py)."""
    if "MALLOC_MMAP_THRESHOLD_" in environ:
        return False
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
