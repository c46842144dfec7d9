"""How far an engine's predicted TTFTs are off, learned live: each TTFT observed on an engine is
paired with the prediction made when that request was routed (the one routed `ttft` seconds before
the first token arrived), and the EWMA of log(observed ÷ predicted) scales the next predictions
(slo_cost). Pure state, kept by the router.

Why a ratio and not the observed TTFT itself: an engine that fell out gets no traffic, so its
observations stop; the ratio stays as last learned while the prediction still follows the engine's
live queue and rates, so it comes back in once its queue drains."""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from types import MappingProxyType

MIN_SAMPLES = 1  # pairs before the ratio is used (bounded below, so one pair cannot run away)
HALF_LIFE_S = 30.0  # without new pairs the learned ratio fades toward 1: an engine that fell out
# while the machine was slow is tried again later instead of being judged by stale news forever
BOUNDS = (0.5, 5.0)  # beyond this the model file is wrong, not the load: do not chase it
PAIR_WITHIN_S = 0.5  # a prediction pairs with an observation routed within this of it
KEEP_S = 300.0  # predictions older than this never got a first token (failed, cancelled): dropped
MAX_PENDING = 4096  # predictions awaiting their first token, per engine
_NONE: Mapping[str, float] = MappingProxyType({})


class _Engine:
    __slots__ = ("pending", "log_ratio", "num_pairs", "paired_at")

    def __init__(self) -> None:
        # (routed at, predicted TTFT), in time order; bounded: a request whose first token is never
        # reported (cancelled, non-streamed) must not let it grow between the KEEP_S prunes
        self.pending: deque[tuple[float, float]] = deque(maxlen=MAX_PENDING)
        self.log_ratio = 0.0
        self.num_pairs = 0
        self.paired_at = 0.0


class TtftScale:
    """`predicted()` when a request is routed to an engine, `observed()` at its first token,
    `scales(now)` for LiveState."""

    def __init__(self, alpha: float = 0.2) -> None:
        self.alpha = alpha
        self._engines: dict[str, _Engine] = {}
        self._learned: dict[str, _Engine] = {}  # those with MIN_SAMPLES pairs

    def scales(self, now: float) -> Mapping[str, float]:
        if not self._learned:
            return _NONE
        out = {}
        for backend, entry in self._learned.items():
            faded = entry.log_ratio * 0.5 ** (max(0.0, now - entry.paired_at) / HALF_LIFE_S)
            out[backend] = min(max(math.exp(faded), BOUNDS[0]), BOUNDS[1])
        return out

    def predicted(self, backend: str, ttft_s: float, now: float) -> None:
        if ttft_s <= 0:
            return
        entry = self._engines.get(backend) or self._engines.setdefault(backend, _Engine())  # none built per call
        entry.pending.append((now, ttft_s))
        while entry.pending and entry.pending[0][0] < now - KEEP_S:
            entry.pending.popleft()

    def observed(self, backend: str, ttft_s: float, now: float) -> None:
        entry = self._engines.get(backend)
        if entry is None or ttft_s <= 0:  # not an engine slo_cost predicts for
            return
        routed = now - ttft_s
        pending = entry.pending
        while pending and pending[0][0] < routed - PAIR_WITHIN_S:  # theirs never came (failed, cancelled)
            pending.popleft()
        if not pending or pending[0][0] > routed + PAIR_WITHIN_S:
            return  # nothing routed then (another rule's request, or one we dropped)
        predicted = pending.popleft()[1]
        if entry.num_pairs:  # what was learned, faded by the time since (as scales() shows it)
            entry.log_ratio *= 0.5 ** (max(0.0, now - entry.paired_at) / HALF_LIFE_S)
        # The mean of the first pairs, then an EWMA: one early pair must not set the scale for long.
        weight = max(self.alpha, 1.0 / (entry.num_pairs + 1))
        entry.log_ratio += (math.log(ttft_s / predicted) - entry.log_ratio) * weight
        entry.num_pairs += 1
        entry.paired_at = now
        if entry.num_pairs >= MIN_SAMPLES:
            self._learned[backend] = entry
