"""Backend health, pure (the caller passes the time): a circuit breaker per backend — failures →
cooldown → one half-open probe — and TTFT statistics (EWMA and a recent p95)."""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from policies.live import CircuitState, HealthView
from policies.schema import Health


class CircuitBreaker:
    """closed --N consecutive failures--> open --cooldown over--> half_open --probe ok--> closed;
    a failed probe re-opens with the cooldown doubled (up to a cap). While the one probe is in
    flight the backend reads as open; a probe that never reports frees up after probe_timeout_s."""

    def __init__(self, settings: Health) -> None:
        self.settings = settings
        self.consecutive_failures = 0
        self.cooldown_s = settings.cooldown_s
        self.retry_at = 0.0  # end of cooldown; meaningful while opened
        self.opened = False
        self.probe_until = 0.0  # a claimed probe's deadline

    def state_at(self, now: float) -> CircuitState:
        if not self.opened:
            return "closed"
        if now < self.retry_at or now < self.probe_until:
            return "open"
        return "half_open"

    def reopen_at(self) -> float:
        return max(self.retry_at, self.probe_until)

    def claim_probe(self, now: float) -> bool:
        """Take the single half-open probe; False if the circuit is not half-open right now."""
        if self.state_at(now) != "half_open":
            return False
        self.probe_until = now + self.settings.probe_timeout_s
        return True

    def release_probe(self) -> None:
        """Give back a claimed probe whose call was not made: half-open again for the next call."""
        if self.opened:
            self.probe_until = 0.0

    def record(self, ok: bool, now: float) -> None:
        if ok:
            self.consecutive_failures = 0
            self.opened = False
            self.cooldown_s = self.settings.cooldown_s
            self.probe_until = 0.0
            return
        self.consecutive_failures += 1
        if self.opened and self.probe_until > 0.0:  # the probe failed: back off harder
            self.cooldown_s = min(self.cooldown_s * 2, self.settings.max_cooldown_s)
            self._open(now)
        elif not self.opened and self.consecutive_failures >= self.settings.failure_threshold:
            self._open(now)

    def _open(self, now: float) -> None:
        self.opened = True
        self.retry_at = now + self.cooldown_s
        self.probe_until = 0.0


class TtftStats:
    """Recent time-to-first-token: an EWMA and the p95 of the last `window` samples."""

    def __init__(self, alpha: float, window: int = 64) -> None:
        self.alpha = alpha
        self.ewma_s: float | None = None
        self.p95_s: float | None = None
        self._recent: deque[float] = deque(maxlen=window)

    def record(self, ttft_s: float) -> None:
        self.ewma_s = ttft_s if self.ewma_s is None else self.ewma_s + self.alpha * (ttft_s - self.ewma_s)
        self._recent.append(ttft_s)
        ordered = sorted(self._recent)
        self.p95_s = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


class HealthBook:
    """Breakers and TTFT stats for every backend, and a cached frozen view of them for decide()."""

    def __init__(self, backends: Iterable[str], settings: Health) -> None:
        self.settings = settings
        self.breakers = {name: CircuitBreaker(settings) for name in backends}
        self.ttft = {name: TtftStats(settings.ttft_ewma_alpha) for name in self.breakers}
        self._view: Mapping[str, HealthView] | None = None
        self._view_until = 0.0

    def carry_over(self, old: HealthBook) -> None:
        """Keep what was learned about backends that survive a policy reload."""
        for name in self.breakers:
            if name in old.breakers:
                self.breakers[name], self.ttft[name] = old.breakers[name], old.ttft[name]
                self.breakers[name].settings = self.settings
        self._view = None

    def record(self, backend: str, ok: bool, ttft_s: float | None, now: float) -> None:
        breaker = self.breakers.get(backend)
        if breaker is None:
            return
        breaker.record(ok, now)
        if ok and ttft_s is not None:
            self.ttft[backend].record(ttft_s)
        self._view = None

    def claim_probe(self, backend: str, now: float) -> bool:
        breaker = self.breakers.get(backend)
        claimed = breaker is not None and breaker.claim_probe(now)
        if claimed:
            self._view = None
        return claimed

    def release_probe(self, backend: str) -> None:
        breaker = self.breakers.get(backend)
        if breaker is not None:
            breaker.release_probe()
            self._view = None

    def view(self, now: float) -> Mapping[str, HealthView]:
        # Rebuilt only after a result or when a cooldown or probe deadline has passed.
        if self._view is None or now >= self._view_until:
            self._view, self._view_until = self._build(now)
        return self._view

    def _build(self, now: float) -> tuple[Mapping[str, HealthView], float]:
        views: dict[str, HealthView] = {}
        until = float("inf")
        for name, breaker in self.breakers.items():
            state = breaker.state_at(now)
            if state == "open":
                until = min(until, breaker.reopen_at())
            stats = self.ttft[name]
            views[name] = HealthView(state, breaker.reopen_at(), stats.ewma_s, stats.p95_s,
                                     breaker.consecutive_failures)
        return MappingProxyType(views), until
