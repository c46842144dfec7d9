"""The heap trimmer (gateway/heap_trim.py), in a fresh process each: a burst's freed memory stays resident
until malloc_trim gives it back; the trimmer does so only when enough sits free, and reports its state."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from gateway.heap_trim import HeapTrimmer, glibc

pytestmark = pytest.mark.skipif(glibc() is None, reason="glibc with mallinfo2 only")

BURST = """
    from gateway.heap_trim import HeapTrimmer, free_heap_bytes, glibc, rss_bytes
    libc = glibc()
    burst = [bytes(2000) for _ in range(30_000)]  # ~60 MB from malloc (> pymalloc's 512 B)
    keep = bytes(3000)  # above the burst on the heap: glibc cannot give the freed memory back by shrinking it
    del burst
    trimmer = HeapTrimmer(libc, interval_s=3600, min_free_bytes=MIN_FREE)
    free, rss = free_heap_bytes(libc), rss_bytes()
    ran = trimmer.trim_once()
    print(json.dumps({"free": free, "rss_before": rss, "rss_after": rss_bytes(), "ran": ran,
                      "released": trimmer.released_bytes, "trims": trimmer.trims}))
"""


def _burst(min_free: int) -> dict[str, int]:
    code = "import json\n" + textwrap.dedent(BURST).replace("MIN_FREE", str(min_free))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_a_bursts_freed_heap_is_given_back_by_a_trim() -> None:
    r = _burst(4 << 20)
    assert r["free"] > 40e6  # freed, yet held by malloc
    assert r["ran"] and r["trims"] == 1
    assert r["rss_before"] - r["rss_after"] > 30e6 and r["released"] > 30e6, r


def test_no_trim_while_less_than_the_floor_sits_free() -> None:
    r = _burst(1 << 40)
    assert not r["ran"] and r["trims"] == 0 and r["released"] == 0
    assert r["rss_before"] - r["rss_after"] < 5e6, r  # nothing given back: the memory is still resident


def test_the_thread_reports_its_state_and_survives_a_failing_trim() -> None:
    class Broken:  # a C library whose mallinfo2 fails: each round fails, the thread goes on
        calls = 0

        def mallinfo2(self) -> None:
            Broken.calls += 1
            raise OSError("mallinfo2 failed")

    trimmer = HeapTrimmer(Broken(), interval_s=0.01).start()
    try:
        for _ in range(500):
            if Broken.calls >= 3:
                break
            trimmer._stop.wait(0.01)
        state = trimmer.status.snapshot()
        assert Broken.calls >= 3 and state.state == "retrying" and "mallinfo2 failed" in (state.last_error or "")
    finally:
        trimmer.stop()
    assert trimmer.status.snapshot().state == "stopped"


FRAGMENTED = """
    from gateway.heap_trim import HeapTrimmer, free_heap_bytes, glibc, rss_bytes
    libc = glibc()
    blocks = [bytes(600) for _ in range(120_000)]  # ~75 MB from malloc, one kept in every six
    kept = blocks[::6]
    del blocks  # ~60 MB free in chunks between the kept ones: a trim gives back only the whole pages among them
    busy = [BUSY]
    watch = {"busy": lambda: busy[0]} if busy[0] else {}  # never busy: the trimmer is given no watch
    trimmer = HeapTrimmer(libc, interval_s=3600, min_free_bytes=4 << 20, **watch)
    runs = [trimmer.trim_once(), trimmer.trim_once()]  # the second: nothing new is free
    after_two = getattr(trimmer, "backoff", None)
    more = [bytes(20_000) for _ in range(1_000)]  # too large for the holes: from the top of the heap
    keep = bytes(100_000)
    del more  # ~20 MB newly free, above the floor left by the first trim
    runs.append(trimmer.trim_once())
    busy[0] = False  # the burst is over: one trim, however little is free
    runs.append(trimmer.trim_once())
    runs.append(trimmer.trim_once())
    print(json.dumps({"runs": runs, "backoff_after_two": after_two, "trims": trimmer.trims,
                      "figures": trimmer.figures() if hasattr(trimmer, "figures") else None}))
"""


def _fragmented(busy: bool) -> dict:
    code = "import json\n" + textwrap.dedent(FRAGMENTED).replace("BUSY", str(busy))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_free_memory_a_trim_left_does_not_set_off_another_but_new_free_memory_does() -> None:
    r = _fragmented(busy=False)
    # the first trim runs, the second finds no more free than the first left (the old trimmer trimmed
    # again every interval while that much sat free), newly freed memory sets off a third
    assert r["runs"][:3] == [True, False, True], r
    assert r["runs"][3:] == [False, False], r  # never busy: no burst ended
    assert r["figures"]["trims"] == 2 and r["figures"]["released_bytes"] > 0, r


def test_a_trim_that_gives_back_little_backs_off_and_a_burst_ending_trims_once() -> None:
    r = _fragmented(busy=True)
    assert r["runs"][:3] == [True, False, True], r
    assert r["runs"][3:] == [True, False], r  # busy -> not busy: one trim, then none
    assert r["trims"] == 3, r
    assert r["backoff_after_two"] == 2, r  # the first trim gave back < 1 MiB (the holes are smaller than pages)
    assert set(r["figures"]) == {
        "trims", "released_bytes", "last_released_bytes", "backoff_intervals"}, r
