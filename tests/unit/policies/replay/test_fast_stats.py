"""The replay's faster rolling statistics give exactly the gateway's numbers."""
from __future__ import annotations

import random

from policies.health import TtftStats
from policies.output_stats import OutputStats
from policies.replay.fast_stats import FastOutputStats, FastTtftStats


def test_output_p90_matches_the_gateways() -> None:
    rng = random.Random(1)
    slow, fast = OutputStats(window=50), FastOutputStats(window=50)
    for _ in range(500):
        team, value = rng.choice("ab"), rng.randint(0, 900)
        slow.record(team, value)
        fast.record(team, value)
        assert (slow.p90("a"), slow.p90("b")) == (fast.p90("a"), fast.p90("b"))


def test_ttft_p95_and_ewma_match_the_gateways() -> None:
    rng = random.Random(2)
    slow, fast = TtftStats(0.2, window=16), FastTtftStats(0.2, window=16)
    for _ in range(300):
        value = rng.lognormvariate(-1, 0.5)
        slow.record(value)
        fast.record(value)
        assert (slow.p95_s, slow.ewma_s) == (fast.p95_s, fast.ewma_s)
