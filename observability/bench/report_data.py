"""The numbers behind the bench report's plots (pure): TTFT vs input length and its least-squares
line, ITL by output position, the ISL×OSL matrix, E2E five-number summaries per pattern, and the
backend split over time. Successful measured requests only."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from observability.bench import metrics
from observability.bench.records import RequestRecord
from observability.report import Box, LineFit
from observability.rollups import TOKEN_EDGES, token_bucket

TIME_SLOTS = 20


@dataclass(frozen=True)
class ReportData:
    ttft_points: tuple[tuple[int, float], ...]  # (input tokens, TTFT s)
    ttft_fit: LineFit | None
    itl_profile: tuple[tuple[int, float, int], ...]  # (first position of a log2 bucket, mean gap s, gaps)
    isl_osl: tuple[tuple[int, ...], ...]  # counts [ISL bucket][OSL bucket] over TOKEN_EDGES
    e2e_by_pattern: tuple[tuple[str, Box | None], ...]
    backend_slots: tuple[tuple[float, tuple[tuple[str, int], ...]], ...]  # (slot start s, per backend count)


def input_tokens(r: RequestRecord) -> int:
    return r.prompt_tokens if r.prompt_tokens is not None else r.isl


def fit_line(points: Sequence[tuple[float, float]]) -> LineFit | None:
    n = len(points)
    if n < 2:
        return None
    sx, sy = sum(x for x, _ in points), sum(y for _, y in points)
    sxx, sxy = sum(x * x for x, _ in points), sum(x * y for x, y in points)
    denominator = n * sxx - sx * sx
    if denominator <= 0:
        return None  # every request had the same input length: no slope to fit
    slope = (n * sxy - sx * sy) / denominator
    return LineFit(n, slope, (sy - slope * sx) / n)


def itl_profile(records: Sequence[RequestRecord]) -> tuple[tuple[int, float, int], ...]:
    """Gap k (between content chunks k and k+1, from 1) falls in bucket 2^floor(log2 k)."""
    sums: dict[int, float] = {}
    counts: Counter[int] = Counter()
    for r in records:
        for k, gap in enumerate(metrics.itls(r), start=1):
            start = 1 << int(math.log2(k))
            sums[start] = sums.get(start, 0.0) + gap
            counts[start] += 1
    return tuple((start, sums[start] / counts[start], counts[start]) for start in sorted(counts))


def five_numbers(values: Sequence[float]) -> Box | None:
    xs = sorted(values)
    if not xs:
        return None
    return Box(len(xs), *(metrics.percentile(xs, q) for q in (5, 25, 50, 75, 95)))


def backend_slots(
    records: Sequence[RequestRecord], slots: int = TIME_SLOTS
) -> tuple[tuple[float, tuple[tuple[str, int], ...]], ...]:
    if not records:
        return ()
    t0, t1 = min(r.send_s for r in records), max(r.send_s for r in records)
    width = (t1 - t0) / slots or 1.0
    per: list[Counter[str]] = [Counter() for _ in range(slots)]
    for r in records:
        per[min(int((r.send_s - t0) / width), slots - 1)][r.backend or "-"] += 1
    return tuple((t0 + i * width, tuple(sorted(c.items()))) for i, c in enumerate(per))


def report_data(records: Sequence[RequestRecord]) -> ReportData:
    ok = [r for r in records if r.ok and not r.warmup]
    points = tuple((input_tokens(r), t) for r in ok if (t := metrics.ttft(r)) is not None)
    matrix = [[0] * len(TOKEN_EDGES) for _ in TOKEN_EDGES]
    for r in ok:
        matrix[token_bucket(input_tokens(r))][token_bucket(r.output_tokens)] += 1
    patterns = sorted({r.pattern for r in ok})
    return ReportData(
        ttft_points=points,
        ttft_fit=fit_line(points),
        itl_profile=itl_profile(ok),
        isl_osl=tuple(tuple(row) for row in matrix),
        e2e_by_pattern=tuple(
            (p, five_numbers([metrics.e2e(r) for r in ok if r.pattern == p])) for p in patterns
        ),
        backend_slots=backend_slots(ok),
    )
