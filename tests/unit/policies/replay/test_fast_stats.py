"""The replay's faster rolling statistics give exactly the gateway's numbers."""
from __future__ import annotations

import random

from policies.health import HealthBook, TtftStats
from policies.output_stats import OutputStats
from policies.replay.fast_stats import FastHealthBook, FastOutputStats, FastTtftStats
from policies.schema import Health


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


def test_health_views_match_the_gateways() -> None:
    """Successes, failures that open a breaker, cooldowns, probes: the same view after every step."""
    rng = random.Random(3)
    settings = Health(failure_threshold=2, cooldown_s=1.0, probe_timeout_s=2.0)
    slow, fast = HealthBook(["a", "b", "c"], settings), FastHealthBook(["a", "b", "c"], settings)
    now, opened = 0.0, 0
    for _ in range(3000):
        now += rng.expovariate(10.0)
        backend, roll, ttft = rng.choice("abc"), rng.random(), rng.lognormvariate(-1, 0.5)
        for book in (slow, fast):
            if roll < 0.7:
                book.record(backend, True, ttft if roll < 0.65 else None, now)
            elif roll < 0.95:
                book.record(backend, False, None, now)
            else:
                book.claim_probe(backend, now)
        opened += any(v.state != "closed" for v in slow.view(now).values())
        assert dict(slow.view(now)) == dict(fast.view(now))
    assert opened > 100  # the breakers did open and close, not only the closed fast path
