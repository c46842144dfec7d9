"""An engine's step times fitted from a recording of its own traffic (the usage ledger's requests it
served): decode step time against the number of its requests decoding at once, from each request's
(E2E − TTFT) / (output − 1); prefill per prompt token from those that found it idle; a hosted
backend's TTFT and decode speed percentiles. The speed each had under the load it actually carried,
as the gateway measured it, not a quiet profile's (docs/replay.md, "Calibrated")."""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import median
from typing import Any

from policies.perf_model import EngineModel, HostedModel, PerfModel
from policies.replay.held_fit import fit_held
from policies.replay.overhead_fit import fit_overhead
from policies.replay.traffic import TrafficRecord

MIN_REQUESTS = 8  # fewer served requests than this: nothing to fit, the model stays as it was


@dataclass(frozen=True)
class _Served:
    arrival: float
    first: float  # first token (arrival + TTFT)
    end: float
    prompt: int
    output: int


def _served(records: Sequence[TrafficRecord], backend: str) -> list[_Served]:
    out = []
    for r in records:
        rec = r.recorded
        if rec is None or rec.backend != backend or rec.ttft_s is None or rec.e2e_s < rec.ttft_s:
            continue
        out.append(_Served(r.time, r.time + rec.ttft_s, r.time + rec.e2e_s, r.prompt_tokens, r.output_tokens))
    return out


class _Level:
    """How many of some intervals were open over time (a step function), integrated by bisect."""

    def __init__(self, intervals: list[tuple[float, float]]) -> None:
        edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
        self.times, self.area, self.count = [], [0.0], []
        level, last = 0, None
        for when, step in edges:
            if last is not None:
                self.area.append(self.area[-1] + level * (when - last))
            self.times.append(when)
            level += step
            self.count.append(level)
            last = when

    def _integral(self, t: float) -> float:
        i = bisect.bisect_right(self.times, t) - 1
        if i < 0:
            return 0.0
        return self.area[i] + self.count[i] * (t - self.times[i])

    def mean(self, start: float, end: float) -> float:
        return (self._integral(end) - self._integral(start)) / (end - start)


def _line(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """Least squares through the medians of each x, each weighted by its number of points (a batch
    size seen once counts once), clipped at 0; None with fewer than 2 distinct x."""
    by_x: dict[float, list[float]] = {}
    for x, y in points:
        by_x.setdefault(x, []).append(y)
    if len(by_x) < 2:
        return None
    xs = sorted(by_x)
    ys, ws = [median(by_x[x]) for x in xs], [len(by_x[x]) for x in xs]
    total = sum(ws)
    mx, my = sum(w * x for w, x in zip(ws, xs)) / total, sum(w * y for w, y in zip(ws, ys)) / total
    sxx = sum(w * (x - mx) ** 2 for w, x in zip(ws, xs))
    slope = max(0.0, sum(w * (x - mx) * (y - my) for w, x, y in zip(ws, xs, ys)) / sxx)
    return max(0.0, my - slope * mx), slope


def _nearest(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def fit_hosted(records: Sequence[TrafficRecord], backend: str, base: HostedModel) -> HostedModel:
    """`base` with the TTFT (p50, p95) and decode speed (p50, p05 tokens/s) this hosted backend showed in
    the recording, as the gateway measured them (its own overhead under that load included)."""
    served = _served(records, backend)
    speeds = [(s.output - 1) / (s.end - s.first) for s in served if s.output >= 2 and s.end > s.first]
    if len(served) < MIN_REQUESTS:
        return base
    ttfts = [s.first - s.arrival for s in served]
    fitted = replace(base, ttft_p50_s=max(1e-6, _nearest(ttfts, 0.5)),
                     ttft_p95_s=max(1e-6, _nearest(ttfts, 0.5), _nearest(ttfts, 0.95)))
    if len(speeds) >= MIN_REQUESTS:
        fitted = replace(fitted, tokens_per_s_p50=_nearest(speeds, 0.5), tokens_per_s_p05=_nearest(speeds, 0.05))
    return replace(fitted, source=f"fitted to {len(served)} requests {backend} served in the recording")


def _least_squares(rows: list[tuple[float, ...]], cols: tuple[int, ...]) -> list[float] | None:
    """Coefficients of these columns of `rows` (the last item of each is y), by the normal equations
    and Gaussian elimination; None when they cannot be told apart."""
    a = [[sum(r[i] * r[j] for r in rows) for j in cols] + [sum(r[i] * r[-1] for r in rows)] for i in cols]
    n = len(cols)
    for k in range(n):
        pivot = max(range(k, n), key=lambda i: abs(a[i][k]))
        if abs(a[pivot][k]) < 1e-12:
            return None
        a[k], a[pivot] = a[pivot], a[k]
        for i in range(n):
            if i != k:
                factor = a[i][k] / a[k][k]
                a[i] = [x - factor * y for x, y in zip(a[i], a[k])]
    return [a[k][n] / a[k][k] for k in range(n)]


def _decode_with_passes(served: list[_Served], chunk: int,
                        max_pass: float = math.inf) -> tuple[float, float, float] | None:
    """(fixed, per sequence, per prefill pass) by least squares over each request's mean step against the
    mean batch it decoded in and the prefill chunks per step that ran meanwhile (others' prompts in
    chunks of the step's prompt budget, counted by their first token inside its decode): what a chunk
    adds to the one pass of a mixed step (EngineModel.mixed_time), which the simulator adds again. A term
    that comes out negative is dropped (a step that did not grow with the batch: per sequence 0); a pass
    dearer than `max_pass` (a whole prefill of a chunk on an idle engine) is held to it and the batch terms
    fitted again beside it; None when the passes cannot be told apart (then the decode line alone). With
    the engine's burst budget on, prompts waiting together shared passes; counting those (a prompt waiting
    beside k others: its tokens ÷ min(burst, chunk × (k − 1))) made the pass dearer and the in-sample TTFT
    p50 further off on all four burst-on recordings (docs/benchmarks.md, #13): a chunk a prompt, still."""
    firsts = sorted((s.first, -(-s.prompt // chunk)) for s in served)
    times, passes = [t for t, _ in firsts], [0]
    for _, n in firsts:
        passes.append(passes[-1] + n)
    decoding = _Level([(s.first, s.end) for s in served])
    rows = []
    for s in served:
        if s.output >= 2 and s.end > s.first:
            ran = passes[bisect.bisect_right(times, s.end)] - passes[bisect.bisect_right(times, s.first)]
            n = s.output - 1
            rows.append((1.0, decoding.mean(s.first, s.end), ran / n, (s.end - s.first) / n))
    for cols in ((0, 1, 2), (0, 2)):
        coef = _least_squares(rows, cols)
        if coef is not None and min(coef[1:]) > 0:
            got = dict(zip(cols, coef))
            if got[2] > max_pass:  # a pass dearer than a whole idle prefill: the columns were not told apart
                bounded = _least_squares([(1.0, b, 0.0, y - max_pass * p) for _, b, p, y in rows], (0, 1))
                if bounded is not None and bounded[1] > 0:
                    return max(0.0, bounded[0]), bounded[1], max_pass
            return max(0.0, got[0]), got.get(1, 0.0), got[2]
    return None


def _pass_fixed(model: EngineModel, chunk_s: float, chunk: int) -> float:
    """The prefill's fixed cost that makes a chunk of `chunk` tokens add `chunk_s` to a mixed step (one
    pass: the larger fixed cost once, so a prefill's beyond the decode's is what it adds)."""
    return model.decode_fixed_s + max(0.0, chunk_s - model.prefill_per_token_s * chunk)


def _idle_prefill(model: EngineModel, line: tuple[float, float], with_passes: tuple[float, float, float] | None,
                  chunk: int, idle_prompt: float) -> EngineModel:
    """The idle arrivals' TTFT against their prompt (`line`: intercept, slope) split into the engine's step
    and the time outside it: the per-token slope is the step's, at most what a chunk of `chunk` tokens adds
    to the decodes' steps (`with_passes`: hundreds of points where the slope has the few idle ones, and it
    holds tokenizing and HTTP too); of the intercept, the step's fixed cost is what the engine's own steps
    showed (a chunk's cost beside the decodes, else a decode step's: one forward pass either way), and the
    rest (gateway, HTTP, tokenizing: it does not hold the engine) is request overhead, with the slope cut
    off at the idle arrivals' mean prompt (`idle_prompt`). Charging the whole intercept to every step made
    a busy engine ~5× too slow; the whole slope, 3-6× on two runs slowed by other processes."""
    slope = line[1] if with_passes is None else min(line[1], with_passes[2] / chunk)
    stepped = replace(model, prefill_per_token_s=slope, prefill_per_context_token_s=0.0)
    fixed = _pass_fixed(stepped, with_passes[2], chunk) if with_passes is not None else stepped.decode_fixed_s
    intercept = line[0] + (line[1] - slope) * idle_prompt  # the cut slope's time, at the idle prompts' mean
    fixed = min(fixed, max(0.0, intercept - model.request_overhead_s))  # never more than the idle TTFT showed
    return replace(stepped, prefill_fixed_s=fixed,
                   request_overhead_s=model.request_overhead_s + max(0.0, intercept - model.request_overhead_s - fixed))


def fit_from_recording(records: Sequence[TrafficRecord], backend: str, base: EngineModel) -> EngineModel:
    """`base` with the decode (and, where enough requests found the engine idle, prefill) step times
    this backend showed in the recording; `base` unchanged when it served too few requests."""
    served = _served(records, backend)
    if len(served) < MIN_REQUESTS:
        return base
    decoding = _Level([(s.first, s.end) for s in served])  # between first token and end
    # Each request's mean step over its decode, against the mean batch it decoded in (itself included).
    points = [(round(decoding.mean(s.first, s.end)), (s.end - s.first) / (s.output - 1))
              for s in served if s.output >= 2 and s.end > s.first]
    chunk = max(1, base.prefill_floor_tokens or base.max_num_batched_tokens)
    # Found it idle: nothing else in flight from its arrival to its first token (its own time only).
    in_flight = _Level([(s.arrival, s.end) for s in served])
    idle = [s for s in served if s.first > s.arrival
            and in_flight.mean(s.arrival, s.first) < 1.0 + 1e-9]
    prefill = _line([(float(s.prompt), s.first - s.arrival) for s in idle]) if len(idle) >= MIN_REQUESTS else None
    # A pass never costs more than the idle arrivals' whole first token at a chunk's length.
    bound = math.inf if prefill is None else prefill[0] + prefill[1] * chunk
    with_passes = _decode_with_passes(served, chunk, bound)
    decode = with_passes[:2] if with_passes is not None else _line(points)
    fitted = base
    if decode is not None:
        fitted = replace(fitted, decode_fixed_s=decode[0], decode_per_seq_s=decode[1], decode_per_context_token_s=0.0)
    if prefill is not None:
        fitted = _idle_prefill(fitted, prefill, with_passes, chunk, sum(s.prompt for s in idle) / len(idle))
    if prefill is None and with_passes is not None:  # too few idle arrivals: a chunk adds to a mixed step what
        # the decodes showed (preferred second: on 4 runs, held out, it moved the share 5-15 points off), the
        # model's per-token slope at most that (a profile's on a loaded host made a pass 4x dearer: run b)
        fitted = replace(fitted, prefill_per_token_s=min(fitted.prefill_per_token_s, with_passes[2] / chunk))
        fitted = replace(fitted, prefill_fixed_s=_pass_fixed(fitted, with_passes[2], chunk))
    elif prefill is None and decode is not None:  # neither: the prefill slowed as the decode did, at batch 1
        scale = (decode[0] + decode[1]) / max(base.decode_time(1, 0), 1e-9)
        fitted = replace(fitted, prefill_fixed_s=base.prefill_fixed_s * scale,
                         prefill_per_token_s=base.prefill_per_token_s * scale)
    burst = base.burst_batched_tokens if base.prefill_floor_tokens else 0  # the engine's: only with a floor
    how = (f"decode from {len(points)}" + (" less the prefill passes" if with_passes else "") + ", prefill "
           + (f"from {len(idle)} idle arrivals" if prefill else "from the passes" if with_passes else "scaled")
           + (f"; burst budget {burst} assumed, as the model says" if burst else "; no burst budget"))
    return replace(fitted, source=f"fitted to {len(served)} requests {backend} served in the recording ({how})")


def fit_state_poll(records: Sequence[TrafficRecord], name: str, model: EngineModel) -> EngineModel:
    """`model` with the period of the gateway's polls of engine `name` as the ledger's views show it:
    twice the mean age of the state each request was routed on (the age of a poll clock's state is
    uniform over its period). Unchanged when fewer than MIN_REQUESTS records carry a view of it."""
    ages = [view.age_s for r in records if r.recorded is not None and (view := r.recorded.view.get(name)) is not None]
    if len(ages) < MIN_REQUESTS:
        return model
    period = round(2.0 * sum(ages) / len(ages), 4)
    return replace(model, state_poll_s=period, source=f"{model.source}; polled every {period:.2f} s (its views)")


def calibrated(perf: PerfModel, engines: Iterable[str], hosted: Iterable[str],
               records: Sequence[TrafficRecord]) -> PerfModel:
    """`perf` with each of these engine and hosted backends' models fitted to what they served in `records`:
    an engine's step times, then the time its requests waited outside them (overhead_fit) and how much of
    that its own queue held (held_fit)."""
    fitted = {name: fit_state_poll(records, name, fit_held(records, name, fit_overhead(
        records, name, fit_from_recording(records, name, perf.engine(name))))) for name in engines}
    apis = {name: fit_hosted(records, name, perf.hosted_model(name)) for name in hosted}
    return PerfModel({**perf.engines, **fitted}, {**perf.hosted, **apis}, perf.default_engine, perf.default_hosted)


def as_model_file(perf: PerfModel, engines: Iterable[str], hosted: Iterable[str]) -> dict[str, Any]:
    """These backends' models as a performance model file's contents (`--perf-model` reads it back):
    what `replay --calibrate --calibrate-out` writes, to predict another window with."""
    return {"engines": {name: asdict(perf.engine(name)) for name in engines},
            "hosted": {name: asdict(perf.hosted_model(name)) for name in hosted}}
