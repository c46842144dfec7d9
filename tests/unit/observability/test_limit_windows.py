"""What a reservation tells the client: per rate limit the tightest window (team's or key's) once the
request is charged, the limits stored with a key enforced beside the policy's, and a refusal whose
window reset equals its Retry-After; and how those become OpenAI's x-ratelimit-* headers."""
from __future__ import annotations

import asyncio
import math

import pytest

from gateway.ratelimit_headers import duration, refusal_headers, reservation_headers
from observability.limits_config import LimitsConfig, TeamLimits, tighter
from observability.limits_inprocess import InProcessLimiter
from observability.limits_protocol import LimitExceeded

NOW = 1_700_000_050.0  # 10 s into a minute


def _limiter(**kwargs: object) -> InProcessLimiter:
    return InProcessLimiter(LimitsConfig(**kwargs), clock=lambda: NOW)  # type: ignore[arg-type]


def test_sequential_reservations_leave_one_request_less_each() -> None:
    limiter = _limiter(teams={"red": TeamLimits(requests_per_minute=10, tokens_per_minute=1000, usd_per_day=1.0)})
    seen = []
    for i in range(5):
        held = asyncio.run(limiter.reserve(f"r{i}", "red", "k", 30, 0.01))
        headers = reservation_headers(held)
        seen.append((headers["x-ratelimit-remaining-requests"], headers["x-ratelimit-remaining-tokens"]))
        assert headers["x-ratelimit-limit-requests"] == "10" and headers["x-ratelimit-reset-requests"] == "50s"
        assert float(headers["x-hybridgw-budget-remaining-usd"]) == pytest.approx(1.0 - 0.01 * (i + 1))
    assert seen == [(str(9 - i), str(1000 - 30 * (i + 1))) for i in range(5)]


def test_a_keys_stored_limits_are_enforced_beside_its_teams_and_reported_when_tighter() -> None:
    limiter = _limiter(teams={"red": TeamLimits(requests_per_minute=10)})
    stored = TeamLimits(requests_per_minute=3)
    remaining = [reservation_headers(asyncio.run(limiter.reserve(f"r{i}", "red", "k1", 1, 0.0, key_limits=stored)))
                 ["x-ratelimit-remaining-requests"] for i in range(3)]
    assert remaining == ["2", "1", "0"]
    with pytest.raises(LimitExceeded) as refused:
        asyncio.run(limiter.check_requests("red", "k1", key_limits=stored))
    assert refused.value.scope == "key" and refused.value.limit == "requests_per_minute"
    headers = refusal_headers(refused.value)
    assert headers["x-ratelimit-remaining-requests"] == "0" and headers["x-ratelimit-limit-requests"] == "3"
    assert headers["x-ratelimit-reset-requests"] == duration(refused.value.retry_after_s) == "50s"
    # another key of the team is not held back by k1's own limit; the team's window is shared
    other = asyncio.run(limiter.reserve("r9", "red", "k2", 1, 0.0))
    assert reservation_headers(other)["x-ratelimit-remaining-requests"] == "6"


def test_policy_and_stored_key_limits_combine_field_by_field() -> None:
    assert tighter(TeamLimits(10, None, 2.0, None), TeamLimits(20, 500, None, None)) == TeamLimits(10, 500, 2.0, None)
    assert tighter(None, TeamLimits(1)) == TeamLimits(1) and tighter(None, None) is None
    limiter = _limiter(keys={"k1": TeamLimits(tokens_per_minute=100)})
    with pytest.raises(LimitExceeded) as refused:
        asyncio.run(limiter.reserve("r", "red", "k1", 60, 0.0, key_limits=TeamLimits(tokens_per_minute=50)))
    assert refused.value.window is not None and refused.value.window.limit == 50


def test_a_budget_refusal_reports_the_headroom_left() -> None:
    limiter = _limiter(teams={"red": TeamLimits(usd_per_day=0.05)})
    asyncio.run(limiter.reserve("a", "red", "k", 1, 0.04))
    with pytest.raises(LimitExceeded) as refused:
        asyncio.run(limiter.reserve("b", "red", "k", 1, 0.02))
    assert float(refusal_headers(refused.value)["x-hybridgw-budget-remaining-usd"]) == pytest.approx(0.01)


def test_no_limits_no_headers() -> None:
    assert reservation_headers(asyncio.run(_limiter().reserve("r", "red", "k", 5, 0.0))) == {}


@pytest.mark.parametrize(("seconds", "text"), [(0.02, "20ms"), (0.0004, "1ms"), (1, "1s"), (1.5, "1.5s"),
                                               (59.9991, "1m0s"), (360, "6m0s"), (3725.5, "1h2m5.5s"), (0, "0ms")])
def test_durations_read_like_openais(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_rerouted_teams_budget_goes_unchecked_and_its_keys_own_still_refuses() -> None:
    limiter = _limiter(teams={"red": TeamLimits(usd_per_day=0.01)})
    key_budget = TeamLimits(usd_per_day=0.05)
    held = asyncio.run(limiter.reserve("a", "red", "k", 1, 0.04, unchecked=("team",), key_limits=key_budget))
    assert held.budgets_left == (("key", pytest.approx(0.01)),)  # the team's spent budget is not a headroom
    assert held.usd_left(["team"]) is None and held.usd_left(["team", "key"]) == pytest.approx(0.01)
    with pytest.raises(LimitExceeded) as refused:
        asyncio.run(limiter.reserve("b", "red", "k", 1, 0.02, unchecked=("team",), key_limits=key_budget))
    assert refused.value.scope == "key" and refused.value.limit == "usd_per_day"
    both = asyncio.run(limiter.reserve("c", "red", "k2", 1, 0.0, key_limits=TeamLimits(usd_per_day=1.0)))
    assert dict(both.budgets_left) == {"team": 0.0, "key": 1.0} and both.usd_headroom == 0.0


def _duration_as_it_was(seconds: float) -> str:
    """The formatting before its integer fast path (floats and rstrips): every reset reads the same."""
    ms = max(math.ceil(round(seconds * 1000, 6)), 0)
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def test_durations_read_as_before_across_every_millisecond_of_a_minute_and_beyond() -> None:
    grid = [ms / 1000 for ms in range(-50, 61_000)] + [ms / 1000 + 0.0004 for ms in range(0, 61_000, 7)]
    grid += [x * 0.37 for x in range(0, 200_000, 13)]  # minutes and hours, uneven
    assert [duration(s) for s in grid] == [_duration_as_it_was(s) for s in grid]
