"""Fitting an engine's step times from a short profile, and hosted_sim's profile as a replay model."""
from __future__ import annotations

import math

import pytest
import yaml

from observability.bench.profile import Profile, render_model_file
from observability.bench.profile_fit import (
    DecodePoint,
    EngineProfile,
    FitError,
    PrefillPoint,
    fit_decode,
    fit_engine,
    fit_prefill,
    hosted_from_sim,
    nonnegative_fit,
)
from policies.perf_model import perf_model_from_mapping


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


def test_decode_fit_recovers_batch_and_context_terms() -> None:
    # ITL = 10 ms + 2 ms per sequence + 1 µs per context token, measured at 3 batches × 2 contexts.
    points = [DecodePoint(b, b * c, 0.010 + 0.002 * b + 1e-6 * b * c) for b in (1, 4, 16) for c in (64, 512)]
    fitted = fit_decode(points)
    assert fitted["decode_fixed_s"] == pytest.approx(0.010)
    assert fitted["decode_per_seq_s"] == pytest.approx(0.002)
    assert fitted["decode_per_context_token_s"] == pytest.approx(1e-6)


def test_a_term_noise_makes_negative_is_zero_and_the_rest_refitted() -> None:
    # The context term is too small to see and noise tilts it below 0: it becomes 0, the others refit.
    points = [DecodePoint(1, 100, 0.012), DecodePoint(4, 400, 0.018), DecodePoint(1, 900, 0.0119),
              DecodePoint(4, 3600, 0.0179)]
    fitted = fit_decode(points)
    assert fitted["decode_per_context_token_s"] == 0.0
    assert fitted["decode_per_seq_s"] == pytest.approx(0.002, rel=0.05) and fitted["decode_fixed_s"] > 0
    assert min(nonnegative_fit([(1.0, 1.0), (1.0, 2.0)], [1.0, 0.5])) == 0.0  # a falling line: slope 0


def test_one_context_only_drops_the_context_term_instead_of_failing() -> None:
    # batch × context is proportional to batch at one context: singular; the per-context column goes.
    fitted = fit_decode([DecodePoint(1, 64, 0.012), DecodePoint(8, 512, 0.026)])
    assert fitted["decode_per_context_token_s"] == 0.0 and fitted["decode_per_seq_s"] == pytest.approx(0.002)


def test_prefill_fit_and_too_few_points() -> None:
    fitted = fit_prefill([PrefillPoint(100, 0.15), PrefillPoint(1100, 1.15)])
    assert fitted == pytest.approx({"prefill_fixed_s": 0.05, "prefill_per_token_s": 0.001})
    with pytest.raises(FitError, match="2 or more prompt lengths"):
        fit_prefill([PrefillPoint(100, 0.15)])
    with pytest.raises(FitError, match="no batch"):
        fit_decode([])


def test_the_model_file_the_profile_writes_is_one_the_policy_loader_reads() -> None:
    # the bench writes policies' file format without importing policies (observability is the layer
    # below): this is where the two are held to one format
    prefill = (PrefillPoint(16, 0.05), PrefillPoint(512, 0.2))
    decode = (DecodePoint(1, 32, 0.01), DecodePoint(16, 512, 0.03))
    fields = {"source": "test", **fit_prefill(prefill), **fit_decode(decode), "block_size": 16, "num_blocks": 100}
    text = render_model_file(Profile(fields, prefill, decode, frozenset()), "local")
    engine = perf_model_from_mapping(yaml.safe_load(text)).engine("local")
    assert engine.block_size == 16 and engine.num_blocks == 100 and engine.prefill_fixed_s == fields["prefill_fixed_s"]
