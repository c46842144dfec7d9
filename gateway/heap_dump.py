"""Heap diagnostics for soak runs, off unless HYBRIDGW_HEAP_DUMP=<dir>: tracemalloc runs, and each SIGUSR2
writes <dir>/heap-<n>.json (RSS, live objects by type, pymalloc and glibc heap figures, RSS after
malloc_trim) and heap-<n>.snap (a tracemalloc snapshot, to diff two of them with bench/soak_heap.py)."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import os
import signal
import sys
import tempfile
import tracemalloc
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gateway.heap_trim import MALLINFO2_FIELDS, glibc

ENV = "HYBRIDGW_HEAP_DUMP"


def install_heap_dump(environ: Mapping[str, str]) -> bool:
    """Start tracemalloc and the SIGUSR2 dump when the environment asks for it; False (nothing done)
    otherwise. HYBRIDGW_HEAP_DUMP_FRAMES: frames kept per allocation (default 8);
    HYBRIDGW_HEAP_DUMP_TRACE=0 leaves tracemalloc off (RSS without its own overhead)."""
    target = environ.get(ENV)
    if not target:
        return False
    directory = Path(target)
    directory.mkdir(parents=True, exist_ok=True)
    trace = environ.get(f"{ENV}_TRACE", "1") != "0"
    if trace:
        tracemalloc.start(int(environ.get(f"{ENV}_FRAMES", "8")))
    count = iter(range(1_000_000))
    signal.signal(signal.SIGUSR2, lambda *_: dump_heap(directory, next(count), trace))
    return True


def dump_heap(directory: Path, n: int, trace: bool) -> dict[str, Any]:
    """Write dump `n`; the figures are also returned. malloc_trim(0) runs last: RSS before and after it
    tells memory glibc holds free (fragmentation, high-water) from memory in use."""
    gc.collect()
    out: dict[str, Any] = {"n": n, "rss_kb": rss_kb(), "gc_objects": len(gc.get_objects()),
                           "types": dict(Counter(type(o).__name__ for o in gc.get_objects()).most_common(60)),
                           "pymalloc": pymalloc_stats(), "mallinfo2": mallinfo2()}
    if trace:
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(directory / f"heap-{n}.snap"))
        out["traced_kb"] = tracemalloc.get_traced_memory()[0] // 1024
    libc = _libc()
    out["malloc_trim"] = bool(libc.malloc_trim(0)) if libc else None
    out["rss_after_trim_kb"] = rss_kb()
    out["rss_by_mapping_kb"] = rss_by_mapping()
    out["threads"] = len(os.listdir("/proc/self/task"))
    (directory / f"heap-{n}.json").write_text(json.dumps(out, indent=1))
    return out


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def rss_by_mapping() -> dict[str, int]:
    """Resident kB by kind of mapping: the brk heap (glibc's main arena), anonymous mappings (pymalloc
    arenas, large mallocs, other threads' glibc arenas, thread stacks), files (code, mapped data)."""
    kinds: dict[str, int] = {}
    kind = "anon"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not line.startswith(tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")):
            name = head[5] if len(head) > 5 else ""
            kind = "heap" if name == "[heap]" else "stack" if name.startswith("[stack") else \
                "file" if name.startswith("/") else "anon"
        elif head and head[0] == "Rss:":
            kinds[kind] = kinds.get(kind, 0) + int(head[1])
    return kinds


def mallinfo2() -> dict[str, int] | None:
    libc = glibc()
    if libc is None:
        return None
    info = libc.mallinfo2()
    return {name: getattr(info, name) for name in MALLINFO2_FIELDS}


def pymalloc_stats() -> dict[str, int]:
    """The arena lines of sys._debugmallocstats() (it writes to the C stderr, so fd 2 is borrowed)."""
    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read()
    stats = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        key = key.strip().strip("#").strip()
        if key in ("arenas allocated total", "arenas reclaimed", "arenas highwater mark", "arenas allocated current",
                   "bytes in allocated blocks", "bytes in available blocks", "unused pools"):
            stats[key] = int(value.strip().replace(",", "").split()[0])
    return stats


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name) if name else None
