"""The numbers of a run, with AIPerf / vLLM benchmark_serving's definitions (pure, no I/O): TTFT,
ITL (every gap between content chunks, pooled), TPOT, E2E, throughputs, goodput under SLOs,
percentiles, errors by type and the share each backend served. Warm-up requests are left out."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from observability.bench.records import RequestRecord

QUANTILES = (50, 90, 95, 99)


def ttft(r: RequestRecord) -> float | None:
    """Request sent → first chunk that carries content."""
    return r.chunk_s[0] - r.send_s if r.chunk_s else None


def e2e(r: RequestRecord) -> float:
    """Request sent → last byte."""
    return r.end_s - r.send_s


def itls(r: RequestRecord) -> list[float]:
    """Every gap between consecutive content chunks."""
    return [b - a for a, b in zip(r.chunk_s, r.chunk_s[1:])]


def tpot(r: RequestRecord) -> float | None:
    """(E2E − TTFT) / (output tokens − 1); undefined for fewer than two output tokens."""
    first = ttft(r)
    if first is None or r.output_tokens < 2:
        return None
    return (e2e(r) - first) / (r.output_tokens - 1)


@dataclass(frozen=True)
class Stats:
    count: int
    mean: float
    p50: float
    p90: float
    p95: float
    p99: float
    min: float
    max: float


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default, which vLLM's benchmark uses)."""
    pos = (len(sorted_values) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def stats(values: Iterable[float]) -> Stats | None:
    xs = sorted(values)
    if not xs:
        return None
    p50, p90, p95, p99 = (percentile(xs, q) for q in QUANTILES)
    return Stats(len(xs), sum(xs) / len(xs), p50, p90, p95, p99, xs[0], xs[-1])


@dataclass(frozen=True)
class Slo:
    """Goodput counts a request only when it meets every bound given (seconds)."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    def met(self, r: RequestRecord) -> bool:
        if not r.ok:
            return False
        checks = ((self.ttft_s, ttft(r)), (self.tpot_s, tpot(r)), (self.e2e_s, e2e(r)))
        return all(bound is None or (value is not None and value <= bound) for bound, value in checks)

    @property
    def given(self) -> bool:
        return any(v is not None for v in (self.ttft_s, self.tpot_s, self.e2e_s))


@dataclass(frozen=True)
class PatternLine:
    pattern: str
    requests: int
    ttft: Stats | None
    e2e: Stats | None


@dataclass(frozen=True)
class Summary:
    requests: int  # measured (warm-up excluded), failed ones included
    ok: int
    duration_s: float  # first measured send → last measured end
    input_tokens: int
    output_tokens: int
    request_throughput: float  # successful requests / s
    output_token_throughput: float  # output tokens of successful requests / s
    goodput: float | None  # requests meeting every SLO / s; None without SLOs
    slo_attainment: float | None  # share of measured requests meeting every SLO
    ttft: Stats | None
    itl: Stats | None
    tpot: Stats | None
    e2e: Stats | None
    errors: dict[str, int]
    backends: dict[str, float]  # share of successful requests per x-hybridgw-backend ("-": no header)
    patterns: tuple[PatternLine, ...]


def summarize(records: Sequence[RequestRecord], slo: Slo = Slo()) -> Summary:
    measured = [r for r in records if not r.warmup]
    ok = [r for r in measured if r.ok]
    duration = (max(r.end_s for r in measured) - min(r.send_s for r in measured)) if measured else 0.0
    per_s = (lambda n: n / duration) if duration > 0 else (lambda n: 0.0)
    output_tokens = sum(r.output_tokens for r in ok)
    good = sum(1 for r in measured if slo.met(r)) if slo.given else None
    backends = Counter(r.backend or "-" for r in ok)
    return Summary(
        requests=len(measured),
        ok=len(ok),
        duration_s=duration,
        input_tokens=sum(r.prompt_tokens if r.prompt_tokens is not None else r.isl for r in ok),
        output_tokens=output_tokens,
        request_throughput=per_s(len(ok)),
        output_token_throughput=per_s(output_tokens),
        goodput=None if good is None else per_s(good),
        slo_attainment=None if good is None or not measured else good / len(measured),
        ttft=stats(v for r in ok if (v := ttft(r)) is not None),
        itl=stats(g for r in ok for g in itls(r)),
        tpot=stats(v for r in ok if (v := tpot(r)) is not None),
        e2e=stats(e2e(r) for r in ok),
        errors=dict(sorted(Counter(r.error for r in measured if r.error).items())),
        backends={name: n / len(ok) for name, n in sorted(backends.items())},
        patterns=tuple(
            _pattern_line(name, [r for r in ok if r.pattern == name])
            for name in sorted({r.pattern for r in measured})
        ),
    )


def _pattern_line(name: str, ok: list[RequestRecord]) -> PatternLine:
    return PatternLine(
        name, len(ok), stats(v for r in ok if (v := ttft(r)) is not None), stats(e2e(r) for r in ok)
    )
