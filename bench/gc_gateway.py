"""`hybridgw` with its event-loop thread's garbage-collection time counted (gc.callbacks, that thread's
CPU clock): SIGUSR1 starts counting, SIGUSR2 writes {"gc_s", "counts", "max_pause_s"} as JSON to PATH.

Run: python -m bench.gc_gateway PATH serve --config … (bench/hot_path.py --gc does).
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
from typing import Any


def main() -> None:
    path, args = Path(sys.argv[1]), sys.argv[2:]
    loop_thread = threading.get_ident()
    state: dict[str, Any] = {"on": False, "gc_s": [0.0, 0.0, 0.0], "counts": [0, 0, 0], "max_pause_s": 0.0,
                             "started": 0.0}

    def collected(phase: str, info: dict[str, int]) -> None:
        if not state["on"] or threading.get_ident() != loop_thread:
            return
        if phase == "start":
            state["started"] = time.thread_time()
            return
        spent, gen = time.thread_time() - state["started"], info["generation"]
        state["gc_s"][gen] += spent
        state["counts"][gen] += 1
        state["max_pause_s"] = max(state["max_pause_s"], spent)

    def start(*_: object) -> None:
        state.update(on=True, gc_s=[0.0, 0.0, 0.0], counts=[0, 0, 0], max_pause_s=0.0)

    def stop(*_: object) -> None:
        state["on"] = False
        path.write_text(json.dumps({k: state[k] for k in ("gc_s", "counts", "max_pause_s")}))

    gc.callbacks.append(collected)
    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["hybridgw", *args]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
