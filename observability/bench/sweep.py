"""A sweep: the same workload at rising load (open-loop rates or closed-loop concurrencies), one
summary per level, stopping at the first level that is saturated; its table and plots (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from observability.bench.metrics import Summary
from observability.bench.plots import load_curve

MAX_ERROR_SHARE = 0.05  # more failures than this: the server is refusing load
MIN_SERVED_SHARE = 0.8  # open loop: served under 80% of the offered rate: queues are growing
MIN_GAIN = 0.05  # more load bought under 5% more throughput: the knee is passed
MIN_SLO_ATTAINMENT = 0.9  # with SLOs: under 90% of requests within them is no longer useful load


@dataclass(frozen=True)
class Level:
    kind: str  # "rate" (requests/s offered) or "concurrency"
    load: float
    summary: Summary
    saturated: str | None  # why this level counts as saturated; None while below the knee


def parse_levels(text: str) -> list[float]:
    """`1,2,4,8` → [1.0, 2.0, 4.0, 8.0]: positive and rising."""
    levels = [float(x) for x in text.split(",") if x.strip()]
    if not levels or any(v <= 0 for v in levels) or levels != sorted(set(levels)):
        raise ValueError(f"sweep levels must be positive and rising: {text!r}")
    return levels


def saturation(kind: str, load: float, s: Summary, previous: Level | None) -> str | None:
    if s.requests and (s.requests - s.ok) / s.requests > MAX_ERROR_SHARE:
        return f"{(s.requests - s.ok) / s.requests:.0%} of requests failed"
    if kind == "rate" and s.request_throughput < MIN_SERVED_SHARE * load:
        return f"served {s.request_throughput:.2f} req/s of {load:g} offered"
    if previous is not None and s.request_throughput < (1 + MIN_GAIN) * previous.summary.request_throughput:
        return (
            f"throughput flat: {s.request_throughput:.2f} req/s vs {previous.summary.request_throughput:.2f}"
        )
    if s.slo_attainment is not None and s.slo_attainment < MIN_SLO_ATTAINMENT:
        return f"only {s.slo_attainment:.0%} of requests within the SLOs"
    return None


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


def render_sweep_table(levels: Sequence[Level]) -> str:
    kind = levels[0].kind if levels else "load"
    head = f"{kind:>12} {'req/s':>8} {'tok/s':>9} {'TTFT p50':>9} {'TTFT p95':>9} {'ITL p50':>8} "
    lines = [head + f"{'goodput':>8} {'errors':>6}  (ms)"]
    for lv in levels:
        s = lv.summary
        goodput = "-" if s.goodput is None else f"{s.goodput:.2f}"
        lines.append(
            f"{lv.load:>12g} {s.request_throughput:>8.2f} {s.output_token_throughput:>9.1f} "
            f"{_ms(s.ttft.p50 if s.ttft else None):>9} {_ms(s.ttft.p95 if s.ttft else None):>9} "
            f"{_ms(s.itl.p50 if s.itl else None):>8} {goodput:>8} {s.requests - s.ok:>6}"
            + (f"  saturated: {lv.saturated}" if lv.saturated else "")
        )
    return "\n".join(lines) + "\n"


def sweep_plots(levels: Sequence[Level]) -> list[str]:
    if not levels:
        return []
    xlabel = "offered rate (req/s)" if levels[0].kind == "rate" else "concurrency"

    def line(pick: str, q: str) -> list[tuple[float, float]]:
        out = []
        for lv in levels:
            st = getattr(lv.summary, pick)
            if st is not None:
                out.append((lv.load, getattr(st, q) * 1000))
        return out

    ttft = load_curve(
        "plot-sweep-ttft",
        "TTFT as load rises",
        xlabel,
        "TTFT (ms)",
        [("p50", line("ttft", "p50")), ("p95", line("ttft", "p95")), ("p99", line("ttft", "p99"))],
    )
    served = [(lv.load, lv.summary.request_throughput) for lv in levels]
    good = [(lv.load, lv.summary.goodput) for lv in levels if lv.summary.goodput is not None]
    throughput = load_curve(
        "plot-sweep-throughput",
        "Throughput as load rises",
        xlabel,
        "requests / s",
        [("served", served), *([("goodput", good)] if good else [])],
    )
    return [ttft, throughput]
