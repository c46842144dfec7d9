"""`hybridgw` under cProfile timed by the event-loop thread's own CPU clock (no idle, no GIL waits),
switched on by SIGUSR1 and written to PATH by SIGUSR2, so warm-up and start-up stay out of the profile.

Run: python -m bench.profiled_gateway PATH serve --config … (bench/hot_path.py --profile does).
"""
from __future__ import annotations

import cProfile
import runpy
import signal
import sys
import time


def main() -> None:
    path, args = sys.argv[1], sys.argv[2:]
    profile = cProfile.Profile(time.thread_time)

    def stop(*_: object) -> None:
        profile.disable()
        profile.dump_stats(path)

    signal.signal(signal.SIGUSR1, lambda *_: profile.enable())
    signal.signal(signal.SIGUSR2, stop)
    sys.argv = ["hybridgw", *args]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
