"""Fit an engine's step-time terms (the performance model file's `engines.NAME` fields) from a short
measured profile: TTFTs of single requests at two or more prompt lengths, and the ITL at two batch
sizes. Pure; bench/replay_vs_real.py measures, this turns the figures into the model."""
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
