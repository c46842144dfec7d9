"""The policy's per-team and per-key limits and budgets, as the limiter enforces them: one mapping for
the gateway's limiters and for replay's."""
from __future__ import annotations

from observability.limits_config import LimitsConfig, TeamLimits
from policies.schema import KeyLimits, Policy, Team


def owner_limits(owner: Team | KeyLimits) -> TeamLimits:
    return TeamLimits(requests_per_minute=owner.limits.requests_per_minute,
                      tokens_per_minute=owner.limits.tokens_per_minute,
                      usd_per_day=owner.budget.usd_per_day, usd_per_month=owner.budget.usd_per_month)


def limits_from_policy(policy: Policy) -> LimitsConfig:
    return LimitsConfig(teams={name: owner_limits(team) for name, team in policy.teams.items()},
                        keys={key_id: owner_limits(key) for key_id, key in policy.keys.items()})
