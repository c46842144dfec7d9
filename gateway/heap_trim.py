"""Give glibc's free heap back to the system after a burst: memory freed after one (a Redis outage's
recovery, a pile-up of streams) otherwise stays resident in malloc's arenas and RSS steps up for good
(docs/benchmarks.md, the session-11/12 soaks). One thread; /readyz shows its state, trims and bytes released."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable
from typing import Any

from gateway.settings import HEAP_TRIM_S
from observability.task_status import TaskStatus

MIN_FREE_BYTES = 4 << 20  # trim when this much more sits free than after the last trim (a trim walks every arena)
MIN_RELEASED_BYTES = 1 << 20  # a trim that gives back less doubles the wait before the next look ...
MAX_BACKOFF = 8  # ... up to this many intervals


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
    """What malloc holds free in its arenas (fordblks: free chunks; fsmblks: free fastbin blocks). A trim
    does not lower it: the chunks stay free, their pages are given back (madvise)."""
    info = libc.mallinfo2()
    return int(info.fordblks + info.fsmblks)


def rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class HeapTrimmer:
    """Every `interval_s` (longer after trims that gave back little): malloc_trim(0) when at least
    `min_free_bytes` more sit free than the least seen since the last trim (free memory a trim could not give
    back, in pages partly in use, does not set off another), and once when `busy` (a burst: the usage
    store down, records spilled) turns false. Counts trims and the RSS they gave back. Survives its own
    errors (reported on /readyz, retried next interval)."""

    def __init__(self, libc: Any, interval_s: float = HEAP_TRIM_S, min_free_bytes: int = MIN_FREE_BYTES,
                 busy: Callable[[], bool] | None = None) -> None:
        self._libc, self._interval_s, self._min_free = libc, interval_s, min_free_bytes
        self._busy = busy
        self.status = TaskStatus("heap_trim", base_s=interval_s, cap_s=interval_s)
        self.trims = 0
        self.released_bytes = 0
        self.last_released_bytes = 0
        self.backoff = 1  # intervals between looks: doubled after a trim that gave back little
        self._floor: int | None = None  # the least free seen since the last trim (None: no trim yet)
        self._was_busy = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hybridgw-heap-trim", daemon=True)

    def start(self) -> HeapTrimmer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.status.stopped()

    def figures(self) -> dict[str, int]:
        """For /readyz: trims so far, the RSS they gave back, the last one's, the current back-off."""
        return {"trims": self.trims, "released_bytes": self.released_bytes,
                "last_released_bytes": self.last_released_bytes, "backoff_intervals": self.backoff}

    def trim_once(self) -> bool:
        """Trim when enough more is free than after the last trim, or a burst has just ended; True when
        a trim ran."""
        free = free_heap_bytes(self._libc)
        self._floor = free if self._floor is None else min(self._floor, free)
        ended = self._burst_ended()
        if free - (0 if self.trims == 0 else self._floor) < self._min_free and not ended:
            return False
        before = rss_bytes()
        self._libc.malloc_trim(0)
        self.last_released_bytes = max(0, before - rss_bytes())
        self.trims += 1
        self.released_bytes += self.last_released_bytes
        self._floor = free_heap_bytes(self._libc)
        self.backoff = 1 if self.last_released_bytes >= MIN_RELEASED_BYTES else min(self.backoff * 2, MAX_BACKOFF)
        return True

    def _burst_ended(self) -> bool:
        busy = bool(self._busy()) if self._busy is not None else False
        ended, self._was_busy = self._was_busy and not busy, busy
        return ended

    def _run(self) -> None:
        self.status.ok()
        while not self._stop.wait(self._interval_s * self.backoff):
            try:
                self.trim_once()
                self.status.ok()
            except Exception as exc:  # noqa: BLE001 - a failed trim must not end the thread
                self.status.failed(exc)


def start_heap_trimmer(interval_s: float = HEAP_TRIM_S,
                       busy: Callable[[], bool] | None = None) -> HeapTrimmer | None:
    """The serving process's trimmer (glibc only; 0: none; Settings.heap_trim_s reads HYBRIDGW_HEAP_TRIM_S,
    a malformed value refused with the other settings at start); `busy`: see HeapTrimmer."""
    libc = glibc() if interval_s > 0 else None
    return None if libc is None else HeapTrimmer(libc, interval_s, busy=busy).start()
