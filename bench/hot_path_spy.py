"""Read py-spy's collapsed stacks of a gateway (bench/hot_path_relay.py --pyspy FILE): the share of the
event-loop thread's samples under each function (inclusive) and where they end (self), native frames
(uvloop, aiohttp's parser, libc's system calls) included. A sampler, so unlike cProfile it does not
inflate code that makes many small calls; shares, not µs (multiply by the measured CPU to get those).

Run: python -m bench.hot_path_spy FILE [--top 40] [--thread "(PID)"]   # py-spy record --threads: the loop
thread's id is the process id
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
from collections import Counter
from pathlib import Path

from bench.hot_path_stages import STAGES

_FRAME = re.compile(r"^(?P<fn>[^ ]+) \((?P<where>[^)]*)\)$")


def start_pyspy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `pid` (native frames, per thread) into `out` until stop_pyspy; py-spy from $PYSPY,
    default the `py-spy` on PATH (`pip install --target DIR py-spy`: not a dependency)."""
    spy = os.environ.get("PYSPY", "py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--native", "--threads", "--rate", "250", "--format",
                             "raw", "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def stop_pyspy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled and exits
    spy.wait(timeout=60)


def short(frame: str) -> str:
    """`fn (path/to/file.py:12)` → `fn (file.py)`: lines merged, so a function is one row."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    where = match["where"].rsplit(":", 1)[0]
    parts = where.split("/")
    return f"{match['fn']} ({'/'.join(parts[-2:])})"


# Where a sample that no stage of bench/hot_path_stages.py claims is spent, by the innermost frame's package.
BROAD = [("uvicorn/protocols/", "HTTP server (uvicorn + httptools)"),
         ("uvicorn/middleware/", "HTTP server (uvicorn + httptools)"), ("starlette/", "framework (Starlette)"),
         ("aiohttp/", "upstream client outside the call (aiohttp callbacks)"), ("gateway/", "the gateway's glue"),
         ("opentelemetry/", "trace (spans: start, attributes, end)"), ("observability/", "record (observability)"),
         ("policies/", "policy (other)"), ("logging/", "access log (logging)")]
_ROOTS = ("gateway/cli.py", "gateway/serve_cli.py", "gateway/serve_worker.py", "bench/hot_path_granian.py")
SPECIFIC = [(stage, [(suffix.rsplit("/", 2)[-2:], fn) for suffix, fn in fns]) for stage, fns in STAGES]


def _frame(frame: str) -> tuple[str, str]:
    """(function, path) of a py-spy frame; the function without its class."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    return match["fn"].rsplit(".", 1)[-1], match["where"].rsplit(":", 1)[0]


def stage_of(frames: list[str]) -> str:
    """One stage per sample: idle and GC first, then the innermost frame of a stage's functions, then the
    innermost frame's package, else the event loop."""
    if frames and frames[-1].startswith(("epoll_pwait", "epoll_wait")):
        return "idle (waiting in epoll)"
    parsed = [_frame(f) for f in frames]
    if any(fn == "gc_collect_main" for fn, _ in parsed):
        return "garbage collector"
    for fn, where in reversed(parsed):
        for stage, fns in SPECIFIC:
            if any(fn == name and where.endswith("/".join(tail)) for tail, name in fns):
                return stage
    for _, where in reversed(parsed):
        if where.endswith(_ROOTS):  # what starts the server: below it, the loop's own work
            continue
        for prefix, stage in BROAD:
            if prefix in where:
                return stage
    return "event loop (uvloop), system calls outside Python"


def stages(path: Path, thread: str) -> Counter[str]:
    out = Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if count.isdigit() and thread in frames[0]:
            out[stage_of(frames[1:])] += int(count)
    return out


def tally(path: Path, thread: str) -> tuple[int, Counter[str], Counter[str], Counter[str]]:
    total, inclusive, leaf, threads = 0, Counter[str](), Counter[str](), Counter[str]()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit():
            continue
        threads[frames[0]] += int(count)
        if thread not in frames[0]:
            continue
        n = int(count)
        names = [short(f) for f in frames[1:]]
        total += n
        for name in set(names):
            inclusive[name] += n
        if names:
            leaf[names[-1]] += n
    return total, inclusive, leaf, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--thread", default="", help="only the thread whose label holds this, e.g. its id")
    args = parser.parse_args()
    total, inclusive, leaf, threads = tally(args.file, args.thread)
    print("samples by thread: " + ", ".join(f"{k} {v}" for k, v in threads.most_common()))
    print(f"{total} samples on {args.thread or 'all threads'}")
    by_stage = stages(args.file, args.thread)
    busy = total - by_stage["idle (waiting in epoll)"]
    print("| stage | share of busy samples |\n|---|---|")
    for stage, n in by_stage.most_common():
        if not stage.startswith("idle"):
            print(f"| {stage} | {n / busy:.1%} |")
    print(f"(idle in epoll: {by_stage['idle (waiting in epoll)'] / total:.1%} of all samples)")
    print("| inclusive | function |\n|---|---|")
    for name, n in inclusive.most_common(args.top):
        print(f"| {n / total:.1%} | {name} |")
    print("| self | function |\n|---|---|")
    for name, n in leaf.most_common(args.top):
        print(f"| {n / total:.1%} | {name} |")


if __name__ == "__main__":
    main()
