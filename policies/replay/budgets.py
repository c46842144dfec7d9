"""Team and key rate limits and USD budgets in a replay, as the gateway's limiter applies them: the
same pure window math (observability.limits: plan_charges, first_exceeded, settle_deltas) over counts
kept here on the simulated clock instead of in a store. The estimate is held when a request is routed
and settled with its actual tokens and cost when it ends, as gateway/proxy.py reserves and settles."""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from observability.limits import Charge, first_exceeded, plan_charges, settle_deltas
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import Reservation
from policies.limits import limits_from_policy
from policies.schema import Policy


def limits_config(policy: Policy, key_limits: Mapping[str, TeamLimits] | None = None) -> LimitsConfig | None:
    """The policy's limits and budgets as the gateway's limiter enforces them; None: there are none,
    neither in the policy nor stored with a key (`key_limits`: key_id → the key store's limits)."""
    config = limits_from_policy(policy)
    empty = TeamLimits()
    if all(v == empty for v in config.teams.values()) and all(v == empty for v in config.keys.values()) \
            and all(v == empty for v in (key_limits or {}).values()):
        return None
    return config


@dataclass(frozen=True, slots=True)
class Refused:
    """The window a request did not fit: its scope ("team" / "key") and limit name."""

    scope: str
    limit_name: str

    @property
    def is_budget(self) -> bool:
        return self.limit_name.startswith("usd")


class ReplayLimiter:
    """InProcessLimiter's reserve and settle, synchronous and on the replay's clock (unix seconds of
    each recorded arrival, so windows are the UTC minutes, days and months the traffic fell in)."""

    def __init__(self, config: LimitsConfig, key_limits: Mapping[str, TeamLimits] | None = None) -> None:
        self.config = config
        self.key_limits = key_limits or {}  # stored with the keys (the key store), as the gateway passes them
        self._counts: dict[str, int] = {}

    def reserve(self, team: str, key_id: str, tokens: int, cost_usd: float, now: float,
                unchecked: Collection[str] = ()) -> Reservation | Refused:
        charges: list[Charge] = plan_charges(self.config, team, key_id, tokens, cost_usd, now, unchecked,
                                             key_limits=self.key_limits.get(key_id) if key_id else None)
        counts = self._counts
        used = [counts.get(c.key, 0) for c in charges]
        bad = first_exceeded(charges, used)
        if bad is not None:
            return Refused(charges[bad].scope, charges[bad].limit_name)
        for charge, already in zip(charges, used):
            counts[charge.key] = already + charge.amount
        return Reservation("", team, key_id, tokens, cost_usd, tuple(c.key for c in charges))

    def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Replace the held estimate with the actuals, in the windows it was charged to."""
        counts = self._counts
        for key, delta in settle_deltas(reservation, tokens, cost_usd):
            counts[key] = counts.get(key, 0) + delta

    def used(self, window_key_prefix: str) -> int:
        """What the windows whose key starts with this have counted (for tests and reports)."""
        return sum(v for k, v in self._counts.items() if k.startswith(window_key_prefix))
