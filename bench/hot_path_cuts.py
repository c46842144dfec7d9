"""In-process CPU of two per-request pieces cut in round 5 of issue #15, before vs now in one run: the route
span under a sampled-out request span (made as a NonRecordingSpan before, not at all now), and a finished
request's limit settlement (one asyncio task each before, one task per loop turn now: gateway/follow_ups.py),
at 1 and 3 requests finishing per loop turn. Thread CPU time, µs per request, medians of 5.

Run: .venv/bin/python -m bench.hot_path_cuts
"""
from __future__ import annotations

import asyncio
import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio

from gateway.follow_ups import FollowUps
from gateway.route_plan import route_span
from observability.trace_recorder import RecordingTracerProvider


def per_call(fn: Callable[[], object], n: int = 20000) -> float:
    start = time.thread_time()
    for _ in range(n):
        fn()
    return (time.thread_time() - start) / n * 1e6


def route_spans() -> tuple[float, float]:
    tracer = RecordingTracerProvider(sampler=ParentBasedTraceIdRatio(0)).get_tracer("bench")
    root = tracer.start_span("POST /v1/chat/completions")
    before = [per_call(lambda: tracer.start_span("route", context=trace.set_span_in_context(root)).end())
              for _ in range(5)]
    now = [per_call(lambda: route_span(tracer, root).end()) for _ in range(5)]
    return statistics.median(before), statistics.median(now)


async def _settle() -> None:
    return None


async def _settlements(per_turn: int, batched: bool, n: int = 20000) -> float:
    follow, pending = FollowUps(logging.getLogger("bench")), set[Any]()
    start = time.thread_time()
    for _ in range(n // per_turn):
        for _ in range(per_turn):
            if batched:
                follow.add(_settle())
            else:
                task = asyncio.get_running_loop().create_task(_settle())
                pending.add(task)
                task.add_done_callback(pending.discard)
        await asyncio.sleep(0)  # one loop turn (in both: its cost is in both figures)
    await follow.drain()
    await asyncio.gather(*pending)
    return (time.thread_time() - start) / n * 1e6


async def settlements(per_turn: int) -> tuple[float, float]:
    before, now = [], []
    for _ in range(5):
        before.append(await _settlements(per_turn, False))
        now.append(await _settlements(per_turn, True))
    return statistics.median(before), statistics.median(now)


def main() -> int:
    print("| piece | before (µs) | now (µs) |\n|---|---|---|")
    print("| route span, sampled-out request | {:.2f} | {:.2f} |".format(*route_spans()))
    for per_turn in (1, 3):
        before, now = asyncio.run(settlements(per_turn))
        print(f"| settlement + one loop turn, {per_turn} finishing per turn | {before:.2f} | {now:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
