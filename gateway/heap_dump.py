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
import threading
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
        current, peak = tracemalloc.get_traced_memory()  # peak: since the last dump, before this one's own
        out["traced_kb"], out["traced_peak_kb"] = current // 1024, peak // 1024
        snapshot = tracemalloc.take_snapshot()
        snapshot.dump(str(directory / f"heap-{n}.snap"))
        del snapshot
        tracemalloc.reset_peak()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_info"):
        out["arenas"] = malloc_arenas(libc, directory / f"heap-{n}.malloc.xml")
    out["malloc_trim"] = bool(libc.malloc_trim(0)) if libc else None
    out["rss_after_trim_kb"] = rss_kb()
    out["rss_by_mapping_kb"] = rss_by_mapping()
    out["anon_mappings_kb"] = anon_mappings()
    out["threads"] = len(os.listdir("/proc/self/task"))
    out["thread_names"] = thread_names()
    (directory / f"heap-{n}.json").write_text(json.dumps(out, indent=1))
    return out


def thread_names() -> list[str]:
    """Each thread: the kernel's name (/proc/self/task/*/comm) and Python's, where Python knows it."""
    python = {t.native_id: t.name for t in threading.enumerate()}
    names = []
    for tid in sorted(os.listdir("/proc/self/task"), key=int):
        comm = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        names.append(f"{comm}:{python.get(int(tid), '-')}")
    return names


def malloc_arenas(libc: Any, path: Path) -> list[dict[str, int]]:
    """glibc's malloc_info, kept as <path>, read back per arena: bytes the system gave it (mmapped heap or
    brk) and bytes free in it, so a burst's free memory is placed in the main arena or a thread's."""
    import xml.etree.ElementTree as ET

    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes, libc.malloc_info.argtypes = [ctypes.c_char_p, ctypes.c_char_p], [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    stream = libc.fopen(str(path).encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    arenas = []
    for heap in ET.parse(path).getroot().findall("heap"):
        total = {t.get("type"): int(t.get("size") or 0) for t in heap.findall("total")}
        system = {s.get("type"): int(s.get("size") or 0) for s in heap.findall("system")}
        arenas.append({"id": int(heap.get("nr") or 0), "system": system.get("current", 0),
                       "free": sum(v for k, v in total.items() if k in ("fast", "rest"))})
    return arenas


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


def anon_mappings() -> dict[str, int]:
    """Resident kB of anonymous mappings, summed by mapping size (kB): pymalloc's arenas are 1,024 kB
    each, a thread's stack 8,192 kB (plus its guard page), a thread's malloc heap up to 65,536 kB."""
    sizes: dict[str, int] = {}
    size = 0
    anon = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not line.startswith(tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")):
            low, high = (int(x, 16) for x in head[0].split("-"))
            size, anon = (high - low) // 1024, len(head) <= 5
        elif anon and head and head[0] == "Rss:" and int(head[1]):
            sizes[str(size)] = sizes.get(str(size), 0) + int(head[1])
    return dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:20])


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
