"""What a replay produced, per request and over time, and the frozen summary reports are made from."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class Outcomes:
    """Per-request columns (index = the request's place in the traffic) and time buckets."""

    def __init__(self, num: int, backends: list[str], engines: list[str], span_s: float, num_buckets: int) -> None:
        self.backends = backends
        self.engines = engines
        self.span_s = span_s
        self.backend = [""] * num  # "" = refused
        self.refusal = [""] * num
        self.rule = [""] * num
        self.over_budget = [False] * num  # a spent budget with on_exceed: route routed it again
        self.cost = [0.0] * num
        self.ttft: list[float | None] = [None] * num
        self.e2e: list[float | None] = [None] * num
        self.engine_busy_s: dict[str, float] = {}
        self.num_buckets = num_buckets
        self._width = span_s / num_buckets if span_s > 0 else 1.0
        self.kv_sum = {n: [0.0] * num_buckets for n in engines}
        self.queue_max = {n: [0] * num_buckets for n in engines}
        self.samples = [0] * num_buckets
        self.served = {b: [0] * num_buckets for b in backends}
        self._bucket = 0

    def _index(self, t: float) -> int:
        return min(self.num_buckets - 1, max(0, int(t / self._width)))

    def at(self, t: float) -> None:
        """The time (from the first arrival) that the next serve() and sample() belong to."""
        self._bucket = self._index(t)

    def sample(self, engines: Mapping[str, Any]) -> None:
        """Each simulated engine's KV usage and queue now (once per request)."""
        b = self._bucket
        self.samples[b] += 1
        for name, engine in engines.items():
            self.kv_sum[name][b] += engine.blocks.usage
            waiting = len(engine.scheduler.waiting)
            if waiting > self.queue_max[name][b]:
                self.queue_max[name][b] = waiting

    def serve(self, i: int, backend: str, cost: float) -> None:
        self.backend[i] = backend
        self.cost[i] = cost
        if backend in self.served:
            self.served[backend][self._bucket] += 1

    def refuse(self, i: int, reason: str) -> None:
        self.refusal[i] = reason


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted `values` (None when empty)."""
    if not values:
        return None
    return values[min(len(values) - 1, max(0, math.ceil(q / 100.0 * len(values)) - 1))]


@dataclass(frozen=True)
class Series:
    """One engine's KV occupancy (mean share per bucket) and queue (max waiting per bucket)."""

    kv_occupancy: tuple[float, ...]
    queue: tuple[int, ...]


@dataclass(frozen=True)
class Summary:
    """One policy's replay, as the table, the JSON and the HTML report show it."""

    policy: str
    requests: int
    served_by: Mapping[str, int]  # backend → requests
    refused: Mapping[str, int]  # reason → requests
    hosted_cost_usd: float
    local_cost_usd: float  # per-token local prices + $/hour × replicas × the window
    all_hosted_cost_usd: float | None  # every request at its alias's first priced hosted deployment
    ttft_s: Mapping[str, float | None]  # p50 / p95 / p99 over served requests
    e2e_s: Mapping[str, float | None]
    ttft_slo_s: float | None
    slo_attainment: float | None  # share of served requests with TTFT ≤ the SLO
    span_s: float
    bucket_s: float
    engines: Mapping[str, Series] = field(default_factory=dict)
    served_over_time: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    engine_utilisation: Mapping[str, float] = field(default_factory=dict)  # busy share of the window
    sim_seconds: float = 0.0  # how long the replay took (wall clock)
    over_budget_routed: int = 0  # requests a spent budget (on_exceed: route) sent through the over_budget rules

    @property
    def total_cost_usd(self) -> float:
        return self.hosted_cost_usd + self.local_cost_usd

    def share(self, backend: str) -> float:
        return self.served_by.get(backend, 0) / self.requests if self.requests else 0.0
