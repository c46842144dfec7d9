"""Give glibc's free heap back to the system now and then: memory freed after a burst (a Redis outage's
held records and retries, a pile-up of streams) otherwise stays resident in malloc's arenas and RSS steps
up for good (docs/benchmarks.md, the session-11 soak). One thread; /readyz shows its state."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Mapping
from typing import Any

from observability.task_status import TaskStatus

INTERVAL_S = 30.0  # HYBRIDGW_HEAP_TRIM_S; 0 turns the trimmer off
MIN_FREE_BYTES = 4 << 20  # trim only when glibc holds at least this much free (a trim walks every arena)


MALLINFO2_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                    "keepcost")


class MallInfo2(ctypes.Structure):
    """glibc's struct mallinfo2 (malloc.h, 2.33+): every field a size_t."""
    _fields_ = [(name, ctypes.c_size_t) for name in MALLINFO2_FIELDS]


def glibc() -> Any | None:
    """The C library when it is glibc with mallinfo2 (2.33+) and malloc_trim; else None."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallinfo2") or not hasattr(libc, "malloc_trim"):
        return None
    libc.mallinfo2.restype = MallInfo2
    return libc


def free_heap_bytes(libc: Any) -> int:
    """What malloc holds free in its arenas (fordblks: free chunks; fsmblks: free fastbin blocks)."""
    info = libc.mallinfo2()
    return int(info.fordblks + info.fsmblks)


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class HeapTrimmer:
    """Every `interval_s`: malloc_trim(0) when at least `min_free_bytes` sit free; counts trims and the RSS
    they gave back. Survives its own errors (reported on /readyz, retried next interval)."""

    def __init__(self, libc: Any, interval_s: float = INTERVAL_S, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self._libc, self._interval_s, self._min_free = libc, interval_s, min_free_bytes
        self.status = TaskStatus("heap_trim", base_s=interval_s, cap_s=interval_s)
        self.trims = 0
        self.released_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hybridgw-heap-trim", daemon=True)

    def start(self) -> HeapTrimmer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.status.stopped()

    def trim_once(self) -> bool:
        """Trim when enough is free; True when a trim ran."""
        if free_heap_bytes(self._libc) < self._min_free:
            return False
        before = rss_bytes()
        self._libc.malloc_trim(0)
        self.trims += 1
        self.released_bytes += max(0, before - rss_bytes())
        return True

    def _run(self) -> None:
        self.status.ok()
        while not self._stop.wait(self._interval_s):
            try:
                self.trim_once()
                self.status.ok()
            except Exception as exc:  # noqa: BLE001 - a failed trim must not end the thread
                self.status.failed(exc)


def start_heap_trimmer(environ: Mapping[str, str] = os.environ) -> HeapTrimmer | None:
    """The serving process's trimmer (glibc only; HYBRIDGW_HEAP_TRIM_S=0: none)."""
    interval_s = float(environ.get("HYBRIDGW_HEAP_TRIM_S", INTERVAL_S))
    libc = glibc() if interval_s > 0 else None
    return None if libc is None else HeapTrimmer(libc, interval_s).start()
