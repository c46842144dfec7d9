"""Turn one replay's outcomes into its Summary: costs (hosted, local, all-hosted), shares, latency
percentiles, TTFT-SLO attainment and the time series."""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from policies.compiled import CompiledPolicy
from policies.perf_model import PerfModel
from policies.replay.outcome import Outcomes, Series, Summary, percentile
from policies.replay.traffic import TrafficRecord

_QS = (("p50", 50.0), ("p95", 95.0), ("p99", 99.0))


def request_slos(compiled: CompiledPolicy, traffic: Sequence[TrafficRecord], override: float | None) -> list[float | None]:
    """Each request's TTFT SLO: --ttft-slo, else its team's `slo`, else the policy's tightest SLO."""
    if override is not None:
        return [override] * len(traffic)
    slos = compiled.policy.slos
    tightest = min((s.ttft_p95_s for s in slos.values()), default=None)
    by_team: dict[str, float | None] = {}
    out = []
    for record in traffic:
        if record.team not in by_team:
            name = compiled.team(record.team).slo
            by_team[record.team] = slos[name].ttft_p95_s if name in slos else tightest
        out.append(by_team[record.team])
    return out


def _hourly_cost(compiled: CompiledPolicy, perf: PerfModel, engine: str, hours: float) -> float:
    spec = compiled.policy.backends[engine]
    price = compiled.policy.prices.get(spec.model or "") or spec.price
    per_hour = price.usd_per_gpu_hour if price is not None and price.usd_per_gpu_hour is not None \
        else perf.engine(engine).usd_per_hour
    return per_hour * hours


def _gpu_hour_priced(compiled: CompiledPolicy, engine: str) -> bool:
    spec = compiled.policy.backends[engine]
    price = compiled.policy.prices.get(spec.model or "") or spec.price
    return price is None or price.usd_per_gpu_hour is not None


def summarize(name: str, compiled: CompiledPolicy, traffic: Sequence[TrafficRecord], out: Outcomes,
              perf: PerfModel, slo_override: float | None) -> Summary:
    served = [i for i, b in enumerate(out.backend) if b]
    ttfts = sorted(t for i in served if (t := out.ttft[i]) is not None)
    e2es = sorted(t for i in served if (t := out.e2e[i]) is not None)
    slos = request_slos(compiled, traffic, slo_override)
    judged = [i for i, s in enumerate(slos) if s is not None]
    met = sum(1 for i in judged if out.backend[i] and (out.ttft[i] or 0.0) <= (slos[i] or 0.0))
    hosted = sum(out.cost[i] for i in served if out.backend[i] not in out.engines)
    hours = out.span_s / 3600.0
    local = sum(out.cost[i] for i in served if out.backend[i] in out.engines) + sum(
        _hourly_cost(compiled, perf, e, hours) for e in out.engines)
    all_hosted = 0.0
    priced = 0
    for record in traffic:
        found = compiled.hosted_deployment(record.model)
        if found is not None:
            all_hosted += found[1].cost(record.prompt_tokens, record.output_tokens)
            priced += 1
    distinct = {s for s in slos if s is not None}
    width = out.span_s / out.num_buckets if out.span_s > 0 else 1.0
    engines = {n: Series(tuple(s / c if c else 0.0 for s, c in zip(out.kv_sum[n], out.samples)),
                         tuple(out.queue_max[n])) for n in out.engines}
    return Summary(
        policy=name, requests=len(traffic), served_by=dict(Counter(out.backend[i] for i in served)),
        refused=dict(Counter(r for r in out.refusal if r)), over_budget_routed=sum(out.over_budget),
        hosted_cost_usd=hosted, local_cost_usd=local,
        all_hosted_cost_usd=all_hosted if priced else None,
        ttft_s={k: percentile(ttfts, q) for k, q in _QS}, e2e_s={k: percentile(e2es, q) for k, q in _QS},
        ttft_slo_s=distinct.pop() if len(distinct) == 1 else None,
        slo_attainment=met / len(judged) if judged else None, span_s=out.span_s, bucket_s=width, engines=engines,
        served_over_time={b: tuple(v) for b, v in out.served.items()},
        engine_utilisation={n: min(1.0, busy / out.span_s) if out.span_s > 0 else 0.0
                            for n, busy in out.engine_busy_s.items()})


def recorded_summary(compiled: CompiledPolicy, traffic: Sequence[TrafficRecord], perf: PerfModel,
                     slo_override: float | None, num_buckets: int = 120) -> Summary | None:
    """What the ledger says actually happened, summarised like a replay (None unless every request
    comes from the ledger). Costs are as recorded; refusals are the records not served `ok`."""
    if not traffic or any(r.recorded is None for r in traffic):
        return None
    # An engine priced by the GPU-hour costs its hours over the window (as in a replay); the ledger's
    # per-request charge for it is that same price spread over its tokens, so counting both would
    # bill it twice — and counting the charge as hosted (as before) made the column disagree.
    hourly = {n for n in compiled.engines if _gpu_hour_priced(compiled, n)}
    t0 = traffic[0].time
    backends = sorted({r.recorded.backend for r in traffic if r.recorded and r.recorded.backend})
    engines = [b for b in backends if b in compiled.engines]
    out = Outcomes(len(traffic), backends, engines, max(traffic[-1].time - t0, 1e-9), num_buckets)
    for i, (record, seen) in enumerate(zip(traffic, [r.recorded for r in traffic if r.recorded is not None])):
        out.at(record.time - t0)
        if seen.backend:
            out.serve(i, seen.backend, 0.0 if seen.backend in hourly else seen.cost_usd)
            out.ttft[i], out.e2e[i] = seen.ttft_s, seen.e2e_s
        else:
            out.refuse(i, seen.status or "failed")
    # The ledger's KV and queue were not recorded: no engine series (zeros would read as "idle").
    return replace(summarize("recorded (as served)", compiled, traffic, out, perf, slo_override), engines={})
