"""`hybridgw` that names its threads on request: SIGUSR1 writes {"names": {native thread id: Python thread
name}, "gc_s", "counts": the event loop thread's GC CPU seconds and collections per generation so far,
"max_pause_s": its longest collection since the last write, "garbage", "garbage_kinds": what the cyclic GC found
unreachable since the last write, once SIGUSR2 turned gc.DEBUG_SAVEALL on (a full collection first)} as JSON to PATH
(Python does not give the OS its threads' names, so /proc shows them all as `python`). BENCH_GC_THRESHOLDS=
"young,middle,old": serve with these GC thresholds (an experiment; gateway/heap.py sets the young one).

Run: python bench/named_gateway.py PATH serve --config … (bench/thread_cpu_split.py does).
"""
from __future__ import annotations

import gc
import json
import os
import runpy
import signal
import sys
import threading
import time
import types
from collections import Counter
from pathlib import Path


def main() -> None:
    path, args = Path(sys.argv[1]), sys.argv[2:]
    loop_thread = threading.get_ident()
    gc_s, counts, started, longest = [0.0, 0.0, 0.0], [0, 0, 0], [0.0], [0.0]
    counted: list[list[object]] = []  # the garbage already written

    def collected(phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != loop_thread:
            return
        if phase == "start":
            started[0] = time.thread_time()
            return
        spent = time.thread_time() - started[0]
        gc_s[info["generation"]] += spent
        longest[0] = max(longest[0], spent)
        counts[info["generation"]] += 1

    def write(*_: object) -> None:
        if gc.get_debug() & gc.DEBUG_SAVEALL:  # counting: what is unreachable now counts to this write
            gc.collect()
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        kinds = Counter(type(o).__qualname__ for o in gc.garbage)
        frames = Counter(f"{Path(o.f_code.co_filename).name}:{o.f_code.co_name}" for o in gc.garbage
                         if type(o) is types.FrameType)  # whose frames the cycles held
        got = {"names": names, "gc_s": gc_s, "counts": counts, "max_pause_s": longest[0],
               "garbage": len(gc.garbage), "garbage_kinds": kinds.most_common(16),
               "garbage_frames": frames.most_common(16)}
        longest[0] = 0.0  # the longest pause since the last write
        counted.append(gc.garbage[:])  # kept: cleared, they would be unreachable again and found again
        gc.garbage.clear()
        path.with_suffix(".tmp").write_text(json.dumps(got))
        path.with_suffix(".tmp").replace(path)

    gc.callbacks.append(collected)
    signal.signal(signal.SIGUSR1, write)
    # SIGUSR2: from now on keep what the cyclic GC finds unreachable (gc.DEBUG_SAVEALL) for the next writes
    signal.signal(signal.SIGUSR2, lambda *_: (gc.garbage.clear(), gc.set_debug(gc.DEBUG_SAVEALL)))
    if os.environ.get("BENCH_GC_THRESHOLDS"):  # an experiment: the thresholds serving starts with instead
        import gateway.heap

        young, middle, old = (int(v) for v in os.environ["BENCH_GC_THRESHOLDS"].split(","))
        gateway.heap.YOUNG_THRESHOLD = young
        gc.set_threshold(700, middle, old)
    sys.argv = ["hybridgw", *args]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
