"""Engine sizing from the ISL/OSL histogram and an engine's performance model (pure): max context at a
percentile of ISL+OSL, the largest batch whose TTFT meets the SLO, the KV pool (fp8 when capacity
binds), replicas for a target rate, and the hosted spill left with its cost. Formulas: docs/replay.md."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from policies.perf_model import EngineModel
from policies.replay.outcome import percentile

TARGET_UTILISATION = 0.8  # replicas are sized to run at most this busy (queues grow fast beyond it)


@dataclass(frozen=True)
class Demand:
    """The traffic to size for: each request's (prompt, output) tokens and its hosted price if spilled."""

    isl: tuple[int, ...]
    osl: tuple[int, ...]
    spill_cost_usd: tuple[float, ...]  # what each request costs hosted (0.0 where unpriced)
    rate_per_s: float  # the request rate to serve


@dataclass(frozen=True)
class ContextChoice:
    """What one max-context choice serves locally and leaves to hosted."""

    percentile: float
    max_context: int
    local_share: float
    spill_cost_usd_per_hour: float


@dataclass(frozen=True)
class Sizing:
    percentile: float
    max_context: int  # tokens, a multiple of the block size
    local_share: float  # requests whose ISL+OSL fits max_context
    max_batch: int
    ttft_estimate_s: float  # one decode step of max_batch + the p95 local prompt's prefill
    kv_dtype: str  # "bf16" or "fp8"
    kv_bytes_per_token: int
    kv_blocks: int
    kv_pool_bytes: int
    replica_requests_per_s: float  # what one replica serves at max_batch
    replicas: int
    rate_per_s: float
    spill_rate_per_s: float
    spill_cost_usd_per_hour: float
    notes: tuple[str, ...] = ()
    choices: tuple[ContextChoice, ...] = ()  # other percentiles, for comparison


CHOICES = (50.0, 90.0, 95.0, 99.0, 99.9, 100.0)


def _context(totals: Sequence[int], pct: float, model: EngineModel) -> int:
    """The percentile of ISL+OSL in whole blocks, at most the model's context."""
    bs = model.block_size
    return min(model.max_model_len, -(-(percentile(totals, pct) or bs) // bs) * bs)


def context_choices(demand: Demand, model: EngineModel) -> tuple[ContextChoice, ...]:
    totals = [i + o for i, o in zip(demand.isl, demand.osl)]
    ordered = sorted(totals)
    hours_per_request = 3600.0 * demand.rate_per_s / max(1, len(totals))  # each request's share of an hour
    out = []
    for pct in CHOICES:
        limit = _context(ordered, pct, model)
        spilled = sum(c for t, c in zip(totals, demand.spill_cost_usd) if t > limit)
        share = sum(1 for t in totals if t <= limit) / max(1, len(totals))
        out.append(ContextChoice(pct, limit, share, spilled * hours_per_request))
    return tuple(out)


def _max_batch(model: EngineModel, context_mean: float, isl_p95: int, slo_s: float) -> tuple[int, float]:
    """The largest batch whose estimated TTFT (a decode step, then this prompt's prefill) meets the SLO."""
    def ttft(b: int) -> float:
        return model.decode_time(b, round(b * context_mean)) + model.prefill_time(isl_p95)
    best = 0
    for batch in range(1, model.max_num_seqs + 1):
        if ttft(batch) <= slo_s:
            best = batch
    return max(1, best), ttft(max(1, best))


def size_engine(demand: Demand, model: EngineModel, pct: float, slo_s: float) -> Sizing:
    notes: list[str] = []
    totals = sorted(i + o for i, o in zip(demand.isl, demand.osl))
    bs = model.block_size
    max_context = _context(totals, pct, model)
    if (percentile(totals, pct) or 0) > model.max_model_len:
        notes.append(f"p{pct:g} of ISL+OSL is beyond the model's context; capped at {model.max_model_len}")
    local = [k for k, (i, o) in enumerate(zip(demand.isl, demand.osl)) if i + o <= max_context]
    share = len(local) / len(totals) if totals else 0.0
    isl = sorted(demand.isl[k] for k in local) or [1]
    mean_isl = sum(isl) / len(isl)
    mean_osl = sum(demand.osl[k] for k in local) / max(1, len(local))
    context_mean = mean_isl + mean_osl / 2  # a decoding request is halfway through its output on average
    batch, ttft = _max_batch(model, context_mean, percentile(isl, 95.0) or 1, slo_s)
    if ttft > slo_s:
        notes.append(f"even alone a p95 prompt's TTFT is {ttft:.3g}s > the SLO {slo_s:g}s: local cannot meet it")
    kv_per_token, dtype = model.kv_bytes_per_token, "bf16"
    need_blocks = max(math.ceil(batch * (mean_isl + mean_osl) / bs) + batch, -(-max_context // bs))
    if need_blocks * bs * kv_per_token > model.kv_pool_bytes:
        kv_per_token, dtype = max(1, kv_per_token // 2), "fp8"
        notes.append("KV capacity binds at the model's pool: fp8 KV halves the bytes per token")
        fits = model.kv_pool_bytes // (bs * kv_per_token)
        if need_blocks > fits:
            batch = max(1, min(batch, int(fits * bs / (mean_isl + mean_osl))))
            need_blocks = min(need_blocks, fits)
            notes.append(f"even at fp8 the pool holds {fits} blocks: max batch cut to {batch}")
    step = model.decode_time(batch, round(batch * context_mean))
    per_request_s = model.prefill_time(round(mean_isl)) + mean_osl * step / batch
    per_replica = 1.0 / per_request_s
    local_rate = demand.rate_per_s * share
    replicas = math.ceil(local_rate / (per_replica * TARGET_UTILISATION) - 1e-9) if local_rate > 0 else 0
    kept = set(local)
    spilled = [c for k, c in enumerate(demand.spill_cost_usd) if k not in kept]
    spill_rate = demand.rate_per_s * (1.0 - share)
    spill_cost = spill_rate * 3600.0 * (sum(spilled) / len(spilled) if spilled else 0.0)
    return Sizing(pct, max_context, share, batch, ttft, dtype, kv_per_token, need_blocks,
                  need_blocks * bs * kv_per_token, per_replica, replicas, demand.rate_per_s, spill_rate, spill_cost,
                  tuple(notes), context_choices(demand, model))


def busy_rate(times: Sequence[float], pct: float = 95.0, hours: tuple[int, int] | None = None) -> float:
    """The request rate of a busy minute: the `pct` percentile of per-minute counts, per second; with
    `hours` (UTC, start inclusive, end exclusive) only the minutes of that window count."""
    if not times:
        return 0.0
    start = min(times)
    span = max(times) - start
    if span < 60.0:  # shorter than a minute: its mean rate
        return len(times) / max(span, 1.0)
    counts: dict[int, int] = {}
    for t in times:
        minute = int((t - start) // 60)
        counts[minute] = counts.get(minute, 0) + 1
    minutes = range(int(span // 60) + 1)
    if hours is not None:
        minutes = [m for m in minutes if hours[0] <= ((start + 60 * m) % 86400) / 3600 < hours[1]]
    per_minute = sorted(counts.get(m, 0) for m in minutes)
    return (percentile(per_minute, pct) or 0) / 60.0
