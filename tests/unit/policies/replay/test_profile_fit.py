"""Fitting an engine's step times from a short profile, and hosted_sim's profile as a replay model."""
from __future__ import annotations

import math

import pytest

from policies.perf_model import perf_model_from_mapping
from policies.replay.profile_fit import EngineProfile, fit_engine, hosted_from_sim


def test_the_fit_recovers_known_terms_and_ignores_one_slow_request() -> None:
    ttfts = [(40, 0.05 + 0.001 * 40)] * 4 + [(800, 0.05 + 0.001 * 800)] * 4 + [(40, 3.0)]  # one outlier
    fitted = fit_engine(EngineProfile(ttfts, (1.0, 0.012), (8.0, 0.026), overhead_s=0.02))
    assert fitted["request_overhead_s"] == pytest.approx(0.02)  # its own field, not in the prefill step
    assert fitted["prefill_fixed_s"] == pytest.approx(0.05, abs=1e-6)
    assert fitted["prefill_per_token_s"] == pytest.approx(0.001)
    assert fitted["decode_per_seq_s"] == pytest.approx(0.002) and fitted["decode_fixed_s"] == pytest.approx(0.010)
    assert perf_model_from_mapping({"engines": {"local": fitted}}).engine("local").decode_time(8, 0) \
        == pytest.approx(0.026)


def test_the_fit_never_gives_negative_times_and_needs_two_lengths() -> None:
    fitted = fit_engine(EngineProfile([(10, 0.5), (1000, 0.1)], (1.0, 0.03), (8.0, 0.02)))
    assert min(fitted.values()) >= 0.0
    with pytest.raises(ValueError, match="two prompt lengths"):
        fit_engine(EngineProfile([(10, 0.5), (10, 0.4)], (1.0, 0.03), (8.0, 0.02)))


def test_hosted_sim_profile_converts_to_the_same_distribution() -> None:
    model = perf_model_from_mapping({"hosted": {"openai": hosted_from_sim(0.4, 0.8, 75.0, 15.0)}}).hosted_model("openai")
    assert model.ttft(0.0) == pytest.approx(0.4)
    assert model.ttft(1.2815515655446004) == pytest.approx(0.8, rel=1e-4)  # hosted_sim's p90
    assert model.tokens_per_s_p05 == pytest.approx(75.0 - 1.6448536 * 15.0, rel=1e-4)
    assert math.isclose(model.tokens_per_s(0.0), 75.0)
