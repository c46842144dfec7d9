"""HostedSim's timings, with the model's logarithms computed once, are the floats HostedModel's own
ttft()/tokens_per_s() give for the same seeded draws (the replay's decisions depend on them bit for bit)."""
from __future__ import annotations

import random

from policies.perf_model import HostedModel
from policies.replay.gateway_sim import HostedSim


def _reference(model: HostedModel, seed: int, outputs: list[int]) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    got = []
    for n in outputs:
        ttft = model.ttft(rng.gauss(0.0, 1.0))
        got.append((ttft, ttft + max(0, n - 1) / model.tokens_per_s(rng.gauss(0.0, 1.0))))
    return got


def test_timings_equal_the_models_own_formulas() -> None:
    outputs = [1, 2, 17, 120, 999, 0, 5] * 40
    for model in (HostedModel(), HostedModel(ttft_p50_s=0.3, ttft_p95_s=2.7, tokens_per_s_p50=150.0,
                                             tokens_per_s_p05=31.0)):
        for seed in (0, 7, 12345):
            sim = HostedSim(model, seed)
            assert [sim.timings(n) for n in outputs] == _reference(model, seed, outputs)


def test_timings_differ_by_seed() -> None:  # the comparison above can fail: draws do move the result
    a, b = HostedSim(HostedModel(), 1), HostedSim(HostedModel(), 2)
    assert [a.timings(50) for _ in range(5)] != [b.timings(50) for _ in range(5)]


def test_timings_with_a_draw_left_over_still_follow_random_gauss() -> None:
    """The pair drawn at once only when random.gauss would draw one; with a spare normal held, its own calls."""
    model, outputs = HostedModel(), [3, 40, 700] * 5
    sim, rng = HostedSim(model, 5), random.Random(5)
    sim._rng.gauss(0.0, 1.0)  # noqa: SLF001 - leave a spare normal in the generator
    rng.gauss(0.0, 1.0)
    got = [sim.timings(n) for n in outputs]
    want = []
    for n in outputs:
        ttft = model.ttft(rng.gauss(0.0, 1.0))
        want.append((ttft, ttft + max(0, n - 1) / model.tokens_per_s(rng.gauss(0.0, 1.0))))
    assert got == want
