"""The policy's team and key limits become the limiter's config, and the limiter enforces both."""
from __future__ import annotations

import asyncio

import pytest

from observability.limits_config import TeamLimits
from observability.limits_inprocess import InProcessLimiter
from observability.limits_protocol import LimitExceeded
from policies.limits import limits_from_policy
from policies.schema import Policy

POLICY = Policy.model_validate({
    "backends": {"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "models": {"m": {"deployments": [{"backend": "up", "model": "m"}]}},
    "teams": {"red": {"limits": {"requests_per_minute": 10, "tokens_per_minute": 1000},
                      "budget": {"usd_per_day": 5.0, "usd_per_month": 50.0}}},
    "keys": {"k1": {"limits": {"requests_per_minute": 2}}},
})


def test_team_and_key_limits_map_one_to_one() -> None:
    config = limits_from_policy(POLICY)
    assert config.teams["red"] == TeamLimits(10, 1000, 5.0, 50.0)
    assert config.keys["k1"] == TeamLimits(requests_per_minute=2)


def test_a_key_limit_refuses_while_its_team_has_room() -> None:
    limiter = InProcessLimiter(limits_from_policy(POLICY), clock=lambda: 1_800_000_000.0)

    async def run() -> None:
        for i in range(2):
            await limiter.reserve(f"r{i}", "red", "k1", 10, 0.0)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.reserve("r2", "red", "k1", 10, 0.0)
        assert refused.value.limit == "requests_per_minute" and "key 'k1'" in refused.value.message
        await limiter.reserve("r3", "red", "k2", 10, 0.0)  # another key of the same team still fits

    asyncio.run(run())
