"""Fit an engine's step-time terms (the performance model file's `engines.NAME` fields) from a short
measured profile: TTFTs of single requests at two or more prompt lengths, and ITLs at several batch
sizes (and contexts). Pure; `hybridgw bench --profile` and bench/replay_vs_real.py measure."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import median


@dataclass(frozen=True)
class EngineProfile:
    """What was measured on the engine alone: prefill step times at two or more prompt lengths (or
    single requests' TTFTs), decode step times at two batch sizes, and the per-request time outside
    the steps (HTTP, tokenizing, streaming) that a client's TTFT adds to its prefill step."""

    ttfts: Sequence[tuple[int, float]]  # (prompt tokens, prefill seconds), one request per step
    itl_small: tuple[float, float]  # (batch size, decode step seconds) at a small batch
    itl_large: tuple[float, float]  # the same at a larger batch
    overhead_s: float = 0.0  # -> request_overhead_s: delays the client, does not hold the engine


def fit_line(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope, both clipped at 0 (a step never takes negative time)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx > 0 else 0.0
    slope = max(slope, 0.0)
    return max(my - slope * mx, 0.0), slope


def fit_engine(profile: EngineProfile) -> dict[str, float]:
    """Prefill = fixed + per token (a line through the step times at each prompt length; medians);
    the time a client waits beyond the step is `request_overhead_s`; decode = fixed + per sequence
    (the context term is left at 0: two batch sizes cannot separate it from the per-sequence one)."""
    if len({p for p, _ in profile.ttfts}) < 2:
        raise ValueError("the profile needs TTFTs at two prompt lengths at least")
    by_length: dict[int, list[float]] = {}
    for prompt, ttft in profile.ttfts:
        by_length.setdefault(prompt, []).append(ttft)
    # Medians per length: one slow request on a shared machine should not tilt the line.
    prefill_fixed, prefill_per_token = fit_line([(p, median(v)) for p, v in sorted(by_length.items())])
    (b1, itl1), (b2, itl2) = sorted((profile.itl_small, profile.itl_large))
    per_seq = max((itl2 - itl1) / (b2 - b1), 0.0) if b2 > b1 else 0.0
    return {"prefill_fixed_s": round(prefill_fixed, 6), "prefill_per_token_s": round(prefill_per_token, 9),
            "prefill_per_context_token_s": 0.0, "decode_fixed_s": round(max(itl1 - per_seq * b1, 0.0), 6),
            "decode_per_seq_s": round(per_seq, 9), "decode_per_context_token_s": 0.0,
            "request_overhead_s": round(max(profile.overhead_s, 0.0), 6)}


def hosted_from_sim(ttft_median_s: float, ttft_p90_s: float, tokens_per_s: float, tokens_per_s_sd: float) -> dict[str, float]:
    """The replay's hosted model (lognormal TTFT by p50/p95, speed by p50/p05) from a hosted_sim
    profile (lognormal TTFT by median/p90; speed normal(mean, sd)): the same TTFT distribution,
    the speed's p05 read off the normal."""
    z90, z95 = 1.2815515655446004, 1.6448536269514722
    p95 = ttft_median_s * math.exp(z95 * math.log(ttft_p90_s / ttft_median_s) / z90)
    p05 = max(tokens_per_s - z95 * tokens_per_s_sd, tokens_per_s / 4)  # hosted_sim floors speed at a quarter
    return {"ttft_p50_s": ttft_median_s, "ttft_p95_s": round(p95, 6), "tokens_per_s_p50": tokens_per_s,
            "tokens_per_s_p05": round(p05, 3)}


class FitError(ValueError):
    """Too few usable measurements to fit a model; the message says which."""


@dataclass(frozen=True)
class PrefillPoint:
    prompt_tokens: int  # as the server counted them (usage), else as we built them
    ttft_s: float  # the median over repeats, idle engine


@dataclass(frozen=True)
class DecodePoint:
    num_seqs: int
    context_tokens: int  # the whole batch's, at the middle of the measured window
    itl_s: float  # median gap while all `num_seqs` streams were decoding


def _solve(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float] | None:
    """Least squares by the normal equations (k ≤ 3 columns); None when they are singular."""
    k = len(rows[0])
    a = [[sum(r[i] * r[j] for r in rows) for j in range(k)] + [sum(r[i] * y for r, y in zip(rows, ys))]
         for i in range(k)]
    for col in range(k):  # Gauss-Jordan with partial pivoting
        pivot = max(range(col, k), key=lambda r: abs(a[r][col]))
        scale = max(abs(a[i][i]) for i in range(k)) or 1.0
        if abs(a[pivot][col]) <= 1e-12 * scale:
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(k):
            if r != col:
                f = a[r][col] / a[col][col]
                a[r] = [x - f * y for x, y in zip(a[r], a[col])]
    return [a[i][k] / a[i][i] for i in range(k)]


def nonnegative_fit(rows: Sequence[Sequence[float]], ys: Sequence[float]) -> list[float]:
    """Least squares with coefficients ≥ 0: a column whose coefficient comes out negative (noise on a
    term too small to measure) is set to 0 and the rest refitted; a singular column is dropped too."""
    active = list(range(len(rows[0])))
    while active:
        sub = [[r[i] for i in active] for r in rows]
        coef = _solve(sub, ys) if len(rows) >= len(active) else None
        if coef is None:
            active.pop()  # the last column is the least important (per-context, then per-token)
            continue
        negative = [i for i, c in zip(active, coef) if c < 0]
        if not negative:
            out = [0.0] * len(rows[0])
            for i, c in zip(active, coef):
                out[i] = c
            return out
        active.remove(min(negative, key=lambda i: coef[active.index(i)]))
    return [0.0] * len(rows[0])


def fit_prefill(points: Sequence[PrefillPoint]) -> dict[str, float]:
    """TTFT on an idle engine = fixed + per token × prompt tokens (one prefill step; the HTTP and
    tokenizing time the client also waits for is in `fixed`)."""
    if len({p.prompt_tokens for p in points}) < 2:
        raise FitError(f"prefill: need TTFTs at 2 or more prompt lengths, got {len(points)} usable")
    fixed, per_token = fit_line([(float(p.prompt_tokens), p.ttft_s) for p in points])
    return {"prefill_fixed_s": fixed, "prefill_per_token_s": per_token}


def fit_decode(points: Sequence[DecodePoint]) -> dict[str, float]:
    """ITL = fixed + per sequence × batch + per context token × the batch's context."""
    if not points:
        raise FitError("decode: no batch finished with inter-token gaps to measure")
    rows = [(1.0, float(p.num_seqs), float(p.context_tokens)) for p in points]
    fixed, per_seq, per_context = nonnegative_fit(rows, [p.itl_s for p in points])
    return {"decode_fixed_s": fixed, "decode_per_seq_s": per_seq, "decode_per_context_token_s": per_context}
