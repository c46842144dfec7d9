"""Drives a run: warm-up (recorded, flagged, left out of the numbers), then the measured requests
in a closed loop or on open-loop arrival times, bounded by count and by time; every finished
record goes to the caller's sink at once, so an interrupted run still has its partial results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from observability.bench.arrivals import ClosedLoop, Load, OpenLoop
from observability.bench.client import Client, Sent
from observability.bench.records import RequestRecord

GIVE_UP_AFTER = 8  # the first this many all failed alike with one of FATAL: no point sending the rest
FATAL = ("connect", "http_401", "http_403", "http_404")


@dataclass(frozen=True)
class RunSpec:
    load: Load
    duration_s: float | None = None  # stop sending measured requests after this long
    seed: int = 0


class Sink:
    """Collects records as they finish and says when the run should stop early."""

    def __init__(self, on_record: Callable[[RequestRecord], None] | None = None) -> None:
        self.records: list[RequestRecord] = []
        self.on_record = on_record
        self.stopped: str | None = None

    def add(self, record: RequestRecord) -> None:
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)
        first = self.records[0].error
        if (
            len(self.records) == GIVE_UP_AFTER
            and first in FATAL
            and all(r.error == first for r in self.records)
        ):
            self.stopped = f"gave up after {GIVE_UP_AFTER} requests: {first}: {record.error_detail}"


async def run(
    client: Client,
    warmup: Sequence[Sent],
    measured: Sequence[Sent],
    spec: RunSpec,
    sink: Sink,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    t0 = clock()
    if warmup:
        concurrency = spec.load.concurrency if isinstance(spec.load, ClosedLoop) else 4
        await _closed(
            client, [replace_base(s, warmup=True) for s in warmup], concurrency, None, t0, sink, clock
        )
    if sink.stopped:
        return
    start = clock()
    deadline = start + spec.duration_s if spec.duration_s else None
    if isinstance(spec.load, ClosedLoop):
        await _closed(client, measured, spec.load.concurrency, deadline, t0, sink, clock)
    else:
        await _open(client, measured, spec.load, spec.seed, deadline, t0, sink, clock)


def replace_base(sent: Sent, **changes: object) -> Sent:
    return replace(sent, base=replace(sent.base, **changes))  # type: ignore[arg-type]


async def _closed(
    client: Client,
    sents: Sequence[Sent],
    concurrency: int,
    deadline: float | None,
    t0: float,
    sink: Sink,
    clock: Callable[[], float],
) -> None:
    todo = iter(sents)

    async def worker() -> None:
        for sent in todo:  # a shared iterator: each request is taken by exactly one worker
            if sink.stopped or (deadline is not None and clock() >= deadline):
                return
            sink.add(await client.send(sent, t0))

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))


async def _open(
    client: Client,
    sents: Sequence[Sent],
    load: OpenLoop,
    seed: int,
    deadline: float | None,
    t0: float,
    sink: Sink,
    clock: Callable[[], float],
) -> None:
    offsets = load.offsets(len(sents), seed)
    start = clock()
    gate = asyncio.Semaphore(load.max_in_flight)
    tasks: list[asyncio.Task[None]] = []

    async def one(sent: Sent) -> None:
        try:
            sink.add(await client.send(sent, t0))
        finally:
            gate.release()

    for sent, offset in zip(sents, offsets):
        wait = start + offset - clock()
        if wait > 0:
            await asyncio.sleep(wait)
        if sink.stopped or (deadline is not None and clock() >= deadline):
            break
        await gate.acquire()
        tasks.append(asyncio.create_task(one(sent)))
    await asyncio.gather(*tasks)
