"""How far an engine's predicted TTFTs are off, learned live: per engine, an EWMA of the TTFT the
performance model predicted for the requests routed there and an EWMA of the TTFT then observed;
their ratio scales the next predictions (slo_cost). Pure state, kept by the router.

Why a ratio and not the observed TTFT itself: an engine that fell out gets no traffic, so its
observations stop; the ratio stays as last learned while the prediction still follows the engine's
live queue and rates, so it comes back in once its queue drains."""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

MIN_SAMPLES = 3  # of each, before the ratio is trusted (bounded by BOUNDS, so an early one cannot run away)
BOUNDS = (0.25, 8.0)  # a model further off than this is a wrong model file, not load: do not chase it


class _Pair:
    __slots__ = ("predicted", "observed", "num_predicted", "num_observed")

    def __init__(self) -> None:
        self.predicted = self.observed = 0.0
        self.num_predicted = self.num_observed = 0


def _ewma(mean: float, count: int, value: float, alpha: float) -> float:
    # The first samples are averaged plainly (an EWMA seeded with one sample trusts it too long).
    return mean + (value - mean) * max(alpha, 1.0 / (count + 1))


class TtftScale:
    """`predicted()` at routing time, `observed()` at the first token; `scales` for LiveState."""

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self._pairs: dict[str, _Pair] = {}
        self.scales: Mapping[str, float] = MappingProxyType({})

    def predicted(self, backend: str, ttft_s: float) -> None:
        pair = self._pairs.setdefault(backend, _Pair())
        pair.predicted = _ewma(pair.predicted, pair.num_predicted, ttft_s, self.alpha)
        pair.num_predicted += 1
        self._update(backend, pair)

    def observed(self, backend: str, ttft_s: float) -> None:
        pair = self._pairs.get(backend)
        if pair is None or not pair.num_predicted:  # not an engine slo_cost predicts for
            return
        pair.observed = _ewma(pair.observed, pair.num_observed, ttft_s, self.alpha)
        pair.num_observed += 1
        self._update(backend, pair)

    def _update(self, backend: str, pair: _Pair) -> None:
        if min(pair.num_predicted, pair.num_observed) < MIN_SAMPLES or pair.predicted <= 0:
            return
        scale = min(max(pair.observed / pair.predicted, BOUNDS[0]), BOUNDS[1])
        self.scales = MappingProxyType({**self.scales, backend: scale})
