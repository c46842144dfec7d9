"""ChargePlans (the in-process limiter's windows kept for a minute) gives exactly plan_charges' charges: across
minute, day and month boundaries, a reloaded config, unchecked scopes, key limits and amounts."""
from __future__ import annotations

from datetime import UTC, datetime

from observability.limits import ChargePlans, plan_charges, settle_deltas
from observability.limits_config import LimitsConfig, TeamLimits
from observability.limits_protocol import Reservation

NOW = datetime(2026, 12, 31, 23, 58, 30, tzinfo=UTC).timestamp()
CONFIG = LimitsConfig(teams={"a": TeamLimits(100, 10_000, 2.5, 40.0), "b": TeamLimits(tokens_per_minute=50)},
                      keys={"k1": TeamLimits(requests_per_minute=3, usd_per_day=1.0)})


def test_the_same_charges_as_plan_charges() -> None:
    plans = ChargePlans()
    reloaded = LimitsConfig(teams={"a": TeamLimits(7, 70, 0.5)})
    cases = [("a", "k1", (), None), ("a", "k2", (), None), ("b", "k1", frozenset({"team"}), None),
             ("a", "k1", frozenset({"key"}), TeamLimits(tokens_per_minute=9, usd_per_month=3.0)), ("c", "k3", (), None)]
    for offset in (0.0, 1.0, 29.9, 30.0, 89.0, 95.0, 3600.0 * 24):  # the minute, the day and the month move
        for config in (CONFIG, reloaded, CONFIG):
            for team, key_id, unchecked, key_limits in cases:
                for tokens, cost in ((0, 0.0), (120, 0.0123), (-5, -1.0), (10**9, 1e6)):
                    now = NOW + offset
                    assert plans.charges(config, team, key_id, tokens, cost, now, unchecked, key_limits) == \
                        plan_charges(config, team, key_id, tokens, cost, now, unchecked, key_limits)


def test_settle_deltas_are_actual_less_held_for_tokens_and_usd_only() -> None:
    charges = plan_charges(CONFIG, "a", "k1", 120, 0.0123, NOW)
    held = Reservation("r", "a", "k1", 120, 0.0123, tuple(c.key for c in charges))
    deltas = dict(settle_deltas(held, 150, 0.01))
    assert {k.rsplit(":", 2)[1]: d for k, d in deltas.items()} == {
        "tokens_per_minute": 30, "usd_per_day": -2_300_000, "usd_per_month": -2_300_000}
    assert sum(1 for k in deltas if k.startswith("key:")) == 1  # the key's usd_per_day; its rpm never settles
    assert settle_deltas(held, 120, 0.0123) == []
