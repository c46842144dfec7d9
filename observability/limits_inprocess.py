"""The Limiter for one gateway process without Redis (the embedded default): the window math of
limits.py over a dict of counters, under a lock."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Mapping

from observability.limits import (
    ChargePlans,
    charged_reservation,
    plan_charges,
    raise_if_exceeded,
    request_charges,
    settle_deltas,
    usage_from,
)
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import LimitUsage, Reservation


class InProcessLimiter:
    """The Limiter for one gateway process without Redis (the embedded default)."""

    def __init__(self, config: LimitsConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (used, window end)
        self._lock = threading.Lock()
        self._plans = ChargePlans()  # the team's and key's windows, planned once a minute

    async def reserve(self, request_id: str, team: str, key_id: str, tokens: int, cost_usd: float,
                      *, unchecked: Collection[str] = (), key_limits: TeamLimits | None = None) -> Reservation:
        now = self._clock()
        charges = self._plans.charges(self.config, team, key_id, tokens, cost_usd, now, unchecked, key_limits)
        with self._lock:
            used = [self._counts.get(c.key, (0, 0.0))[0] for c in charges]
            raise_if_exceeded(charges, used, now)
            for charge, already in zip(charges, used):
                self._counts[charge.key] = (already + charge.amount, charge.window_end)
            self._sweep(now)
        return charged_reservation(request_id, team, key_id, tokens, cost_usd, charges, used, now)

    async def check_requests(self, team: str, key_id: str, *, key_limits: TeamLimits | None = None) -> None:
        now = self._clock()
        charges = request_charges(self.config, team, key_id, now, key_limits)
        with self._lock:
            used = [self._counts.get(c.key, (0, 0.0))[0] for c in charges]
        raise_if_exceeded(charges, used, now)

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        with self._lock:
            for key, delta in settle_deltas(reservation, tokens, cost_usd):
                if key in self._counts:
                    used, end = self._counts[key]
                    self._counts[key] = (used + delta, end)

    def restore(self, used: Mapping[str, tuple[int, float]]) -> None:
        """Add what the current windows already used before this process started ({window key:
        (amount, window end)}, see limits_restore), so a restart does not reset a spent budget."""
        with self._lock:
            for key, (amount, end) in used.items():
                self._counts[key] = (self._counts.get(key, (0, end))[0] + amount, end)

    def reconfigure(self, config: LimitsConfig) -> None:
        self.config = config

    def state(self) -> None:
        return None  # in memory: it never fails open

    async def usage(self, team: str, key_id: str, key_limits: TeamLimits | None = None) -> list[LimitUsage]:
        charges = plan_charges(self.config, team, key_id, 0, 0.0, self._clock(), key_limits=key_limits)
        with self._lock:
            return usage_from(charges, [self._counts.get(c.key, (0, 0.0))[0] for c in charges])

    async def aclose(self) -> None:
        return None

    def _sweep(self, now: float) -> None:
        if len(self._counts) > 10_000:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
