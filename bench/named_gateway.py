"""`hybridgw` that names its threads on request: SIGUSR1 writes {"names": {native thread id: Python thread
name}, "gc": [the event loop thread's GC CPU seconds and collections per generation, so far]} as JSON to PATH
(Python does not give the OS its threads' names, so /proc shows them all as `python`).

Run: python -m bench.named_gateway PATH serve --config … (bench/thread_cpu_split.py does).
"""
from __future__ import annotations

import gc
import json
import runpy
import signal
import sys
import threading
import time
from pathlib import Path


def main() -> None:
    path, args = Path(sys.argv[1]), sys.argv[2:]
    loop_thread = threading.get_ident()
    gc_s, counts, started = [0.0, 0.0, 0.0], [0, 0, 0], [0.0]

    def collected(phase: str, info: dict[str, int]) -> None:
        if threading.get_ident() != loop_thread:
            return
        if phase == "start":
            started[0] = time.thread_time()
            return
        gc_s[info["generation"]] += time.thread_time() - started[0]
        counts[info["generation"]] += 1

    def write(*_: object) -> None:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        path.with_suffix(".tmp").write_text(json.dumps({"names": names, "gc_s": gc_s, "counts": counts}))
        path.with_suffix(".tmp").replace(path)

    gc.callbacks.append(collected)
    signal.signal(signal.SIGUSR1, write)
    sys.argv = ["hybridgw", *args]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
