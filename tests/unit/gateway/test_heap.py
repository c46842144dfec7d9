"""prepare_heap_for_serving: start-up's garbage is collected, what is left is kept out of later full
GCs, young collections run less often, and glibc's mmap threshold stays where it starts."""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest

from gateway.heap import YOUNG_THRESHOLD, fix_mmap_threshold, prepare_heap_for_serving


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


# A block freed once raises glibc's dynamic threshold; is the next one of a smaller size still its own
# mmap (counted in mallinfo2's hblkhd), so that freeing it gives the memory back?
MMAP_PROBE = """
import ctypes, json, sys
from gateway.heap import fix_mmap_threshold
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                               "fordblks keepcost").split()]
libc.mallinfo2.restype = Info
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
fixed = fix_mmap_threshold({}) if sys.argv[1] == "fixed" else False
libc.free(libc.malloc(4 << 20))  # a 4 MiB block, mmapped, freed: glibc's threshold is now 4 MiB
before = libc.mallinfo2().hblkhd
block = libc.malloc(600 << 10)  # as large as a slot-map dict
print(json.dumps({"fixed": fixed, "mmapped": libc.mallinfo2().hblkhd - before >= 600 << 10}))
"""


def _probe(mode: str) -> dict[str, bool]:
    out = subprocess.run([sys.executable, "-c", MMAP_PROBE, mode], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])})
    return json.loads(out.stdout)


@pytest.mark.skipif(not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"),
                    reason="glibc only")
def test_large_blocks_stay_mmapped_after_a_larger_one_was_freed() -> None:
    assert _probe("dynamic") == {"fixed": False, "mmapped": False}  # glibc's own: from the arena
    assert _probe("fixed") == {"fixed": True, "mmapped": True}


def test_an_explicit_setting_is_left_alone() -> None:
    assert fix_mmap_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"}) is False
