"""The soak's heap dump (gateway/heap_dump.py): off without HYBRIDGW_HEAP_DUMP; with it, a real process
writes its figures and a loadable tracemalloc snapshot on each SIGUSR2."""
from __future__ import annotations

import json
import os
import signal
import sys
import tracemalloc
from pathlib import Path

from gateway.heap_dump import install_heap_dump, pymalloc_stats
from tests.support import procs

CHILD = """
import sys, time
from gateway.heap_dump import install_heap_dump
assert install_heap_dump({"HYBRIDGW_HEAP_DUMP": sys.argv[1]})
print("ready", flush=True)
time.sleep(120)
"""


def test_nothing_is_installed_without_the_variable() -> None:
    before = signal.getsignal(signal.SIGUSR2)
    assert install_heap_dump({}) is False
    assert signal.getsignal(signal.SIGUSR2) is before
    assert not tracemalloc.is_tracing()


def test_each_sigusr2_writes_a_dump(tmp_path: Path) -> None:
    directory = tmp_path / "heap"
    proc = procs.start([sys.executable, "-c", CHILD, str(directory)], env={"PYTHONPATH": os.getcwd()}, name="heapdump")
    try:
        procs.wait_until(lambda: "ready" in proc.output(), "the child to install the dump")
        for n in range(2):
            os.kill(proc.pid, signal.SIGUSR2)
            procs.wait_until(lambda n=n: (directory / f"heap-{n}.json").exists(), f"dump {n}")
    finally:
        procs.stop(proc)
    dump = json.loads(procs.wait_until(lambda: _complete(directory / "heap-1.json"), "dump 1 written"))
    assert dump["n"] == 1 and dump["rss_kb"] > 0 and dump["rss_after_trim_kb"] > 0
    assert dump["gc_objects"] >= sum(dump["types"].values()) > 0
    assert dump["traced_kb"] > 0 and dump["mallinfo2"]["arena"] > 0
    snapshot = tracemalloc.Snapshot.load(str(directory / "heap-1.snap"))
    assert snapshot.traces  # a snapshot two dumps can be diffed with


def test_pymalloc_arenas_are_read() -> None:
    stats = pymalloc_stats()  # tracemalloc off here: pymalloc's own figures
    assert stats["arenas allocated current"] > 0 and stats["bytes in allocated blocks"] > 0


def _complete(path: Path) -> str:
    text = path.read_text() if path.exists() else ""
    return text if text.endswith("}") else ""
