"""A team over its USD budget is still served when the request costs nothing (local at $0); its
request and token limits still apply, and a priced request is still refused."""
from __future__ import annotations

import asyncio

import pytest

from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_inprocess import InProcessLimiter
from observability.limits_protocol import LimitExceeded

NOW = 1_795_000_030.0


def _spent_limiter(**limits: float) -> InProcessLimiter:
    """Team `t` with a $0.10 day budget that a settle has pushed past its limit ($0.15 spent)."""
    limiter = InProcessLimiter(LimitsConfig(teams={"t": TeamLimits(usd_per_day=0.10, **limits)}),  # type: ignore[arg-type]
                               clock=lambda: NOW)

    async def spend() -> None:
        held = await limiter.reserve("r0", "t", "k", 10, 0.05)
        await limiter.settle(held, 10, 0.15)  # the answer cost more than estimated

    asyncio.run(spend())
    return limiter


def test_a_zero_cost_request_passes_an_exhausted_budget() -> None:
    limiter = _spent_limiter()
    assert asyncio.run(limiter.reserve("r1", "t", "k", 10, 0.0)).cost_usd == 0.0
    with pytest.raises(LimitExceeded) as refused:
        asyncio.run(limiter.reserve("r2", "t", "k", 10, 0.01))
    assert refused.value.limit == "usd_per_day"


def test_request_and_token_limits_still_apply_at_zero_cost() -> None:
    limiter = _spent_limiter(requests_per_minute=2)  # r0 took one
    asyncio.run(limiter.reserve("r1", "t", "k", 10, 0.0))
    with pytest.raises(LimitExceeded) as refused:
        asyncio.run(limiter.reserve("r2", "t", "k", 10, 0.0))
    assert refused.value.limit == "requests_per_minute"
    limiter = _spent_limiter(tokens_per_minute=25)  # r0 settled at 10 tokens
    with pytest.raises(LimitExceeded) as refused:
        asyncio.run(limiter.reserve("r3", "t", "k", 20, 0.0))
    assert refused.value.limit == "tokens_per_minute"
