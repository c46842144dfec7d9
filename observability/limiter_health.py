"""Whether the shared (Redis) limiter is enforcing limits or failing open, and why: Redis down (an
outage, the documented fail-open) or an error reply that is a bug (a Lua error, WRONGTYPE on a
window key; limits_redis tells them apart). /readyz shows the state, /metrics counts both kinds per
script. No redis import: /readyz and /metrics read it in the embedded case too."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

if TYPE_CHECKING:
    from observability.limits_protocol import Limiter


@dataclass(frozen=True)
class LimiterState:
    failing_open: bool  # the latest round trip failed: limits are not being enforced
    reason: str | None  # "redis_down" or "script_error" (of the latest failure)
    since: float | None  # unix seconds the current run of failures began
    # per script (reserve, settle, check_requests, usage): round trips failed open, in all
    outages: Mapping[str, int] = field(default_factory=dict)  # Redis down or refusing
    script_errors: Mapping[str, int] = field(default_factory=dict)  # error replies: bugs
    last_error: str | None = None  # the latest failure's text (admin only: it may name keys)
    outage_kind: str = "redis_down"  # what an outage is called ("counts_unreachable": --workers' supervisor)

    def public(self) -> dict[str, Any]:
        return {"failing_open": self.failing_open, "since": None if self.since is None else round(self.since, 3)}

    def detail(self) -> dict[str, Any]:
        return {**self.public(), "reason": self.reason, "outages": dict(self.outages),
                "script_errors": dict(self.script_errors), "last_error": self.last_error}

    def observations(self) -> Iterable[Observation]:
        for kind, counts in ((self.outage_kind, self.outages), ("script_error", self.script_errors)):
            for script, n in counts.items():
                yield Observation(n, {"hybridgw.limiter.script": script, "hybridgw.limiter.failure": kind})


class LimiterHealth:
    """Updated by the limiter on its event loop after each round trip; read by /readyz and by /metrics
    (from a worker thread: hence the lock)."""

    def __init__(self, clock: Callable[[], float] = time.time, *, outage_kind: str = "redis_down") -> None:
        self._clock = clock
        self._outage_kind = outage_kind
        self._lock = threading.Lock()
        self._failing: str | None = None
        self._since: float | None = None
        self._outages: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._last_error: str | None = None

    def ok(self) -> None:
        if self._failing is not None:
            with self._lock:
                self._failing = self._since = None

    def failed(self, script: str, exc: BaseException, *, outage: bool) -> bool:
        """Note a failed round trip of `script`; True when it is a bug's first error reply for that
        script (the caller logs those once; outages are warned about at a bounded rate)."""
        with self._lock:
            counts = self._outages if outage else self._errors
            first = not outage and script not in self._errors
            counts[script] = counts.get(script, 0) + 1
            if self._failing is None:
                self._since = self._clock()
            self._failing = self._outage_kind if outage else "script_error"
            self._last_error = f"{script}: {type(exc).__name__}: {exc}"
        return first

    def state(self) -> LimiterState:
        with self._lock:
            return LimiterState(self._failing is not None, self._failing, self._since,
                                MappingProxyType(dict(self._outages)), MappingProxyType(dict(self._errors)),
                                self._last_error, self._outage_kind)


def register_limiter_metrics(provider: MeterProvider, limiter: Limiter) -> None:
    """hybridgw_limiter_failures_total{script, failure=redis_down|script_error} on /metrics (no series
    for a limiter that cannot fail)."""
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        state = limiter.state()
        return list(state.observations()) if state is not None else []

    provider.get_meter("hybridgw.observability").create_observable_counter(
        "hybridgw.limiter.failures", callbacks=[observe], unit="{failure}",
        description="Limiter round trips to Redis that failed open, by script and kind")
