"""`hybridgw` that names its threads on request: SIGUSR1 writes {native thread id: Python thread name} as JSON
to PATH (Python does not give the OS its threads' names, so /proc shows them all as `python`).

Run: python -m bench.named_gateway PATH serve --config … (bench/thread_cpu_split.py does).
"""
from __future__ import annotations

import json
import runpy
import signal
import sys
import threading
from pathlib import Path


def main() -> None:
    path, args = Path(sys.argv[1]), sys.argv[2:]

    def write(*_: object) -> None:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        path.with_suffix(".tmp").write_text(json.dumps(names))
        path.with_suffix(".tmp").replace(path)

    signal.signal(signal.SIGUSR1, write)
    sys.argv = ["hybridgw", *args]
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
