"""Step times fitted to a recording of the engine's own traffic: a recording made by a known engine
(decode 10 ms + 2 ms per sequence, prefill 10 ms + 1 ms per token) behind 40 ms outside it (gateway,
HTTP, tokenizing) gives that engine and that overhead back."""
from __future__ import annotations

from dataclasses import replace

import pytest

from policies.perf_model import EngineModel, PerfModel
from policies.replay.recording_fit import calibrated, fit_from_recording
from policies.replay.traffic import Recorded, TrafficRecord

BASE = EngineModel(decode_fixed_s=0.5, decode_per_seq_s=0.5, prefill_fixed_s=0.5, prefill_per_token_s=0.5)


def _record(at: float, prompt: int, output: int, batch: int, backend: str = "local") -> TrafficRecord:
    ttft = 0.04 + 0.01 + 0.001 * prompt  # outside the engine, then its prefill step
    e2e = ttft + (output - 1) * (0.010 + 0.002 * batch)
    return TrafficRecord(at, "t", "chat", prompt, output, recorded=Recorded(backend, "ok", 0.0, ttft, e2e))


def _recording() -> list[TrafficRecord]:
    alone = [_record(100.0 * i, 100 + 50 * i, 11, 1) for i in range(10)]  # one at a time: batch 1, found idle
    pairs = [_record(5000.0 + 100 * i, 300, 21, 2) for i in range(10) for _ in range(2)]  # two at once: batch 2
    hosted = [_record(50.0 + 100 * i, 400, 30, 5, backend="openai") for i in range(10)]  # not this engine's
    return sorted(alone + pairs + hosted, key=lambda r: r.time)


def test_a_known_engine_is_fitted_back_from_its_recording() -> None:
    fitted = fit_from_recording(_recording(), "local", BASE)
    assert fitted.decode_fixed_s == pytest.approx(0.010) and fitted.decode_per_seq_s == pytest.approx(0.002)
    # The idle TTFT's intercept is not all the engine's step: its fixed cost is a step's (one forward pass,
    # as the decodes showed), the rest is time outside it, which delays the client but holds no step.
    # (Charged to every step, the whole intercept made a busy engine ~5× too slow.)
    assert fitted.prefill_fixed_s == pytest.approx(0.01) and fitted.prefill_per_token_s == pytest.approx(0.001)
    assert fitted.request_overhead_s == pytest.approx(0.04)
    assert fitted.mixed_time(2, 0, 64) == pytest.approx(0.01 + 2 * 0.002 + 0.064)  # beside decodes: no 40 ms
    with_some = fit_from_recording(_recording(), "local", replace(BASE, request_overhead_s=0.015))
    assert (with_some.prefill_fixed_s, with_some.request_overhead_s) == (pytest.approx(0.01), pytest.approx(0.04))
    assert fitted.decode_per_context_token_s == 0.0 and "from 10 idle arrivals" in fitted.source
    assert (fitted.num_blocks, fitted.max_num_seqs) == (BASE.num_blocks, BASE.max_num_seqs)  # the pool stays


def test_without_idle_arrivals_prefill_scales_as_the_decode_did() -> None:
    pairs = [r for r in _recording() if r.time >= 5000]
    fitted = fit_from_recording(pairs, "local", BASE)  # one batch size only: no decode line either
    assert fitted.decode_fixed_s == BASE.decode_fixed_s and fitted.prefill_fixed_s == BASE.prefill_fixed_s
    both = [r for r in _recording() if r.time >= 5000 or r.time < 300]  # 3 alone: too few to fit a prefill
    fitted = fit_from_recording(both, "local", BASE)
    scale = (0.010 + 0.002) / BASE.decode_time(1, 0)
    assert fitted.decode_per_seq_s == pytest.approx(0.002) and "prefill scaled" in fitted.source
    assert fitted.prefill_per_token_s == pytest.approx(BASE.prefill_per_token_s * scale)


def test_too_few_requests_leave_the_model_and_calibrated_fits_only_the_named_engines() -> None:
    assert fit_from_recording(_recording()[:5], "local", BASE) is BASE
    perf = calibrated(PerfModel({}, {}, BASE), ["local"], [], _recording())
    assert perf.engine("local").decode_per_seq_s == pytest.approx(0.002) and perf.engine("other") is BASE
    # Fours at once, each with a TTFT as if alone: shorter than the simulated engine gives 3 of each 4, so
    # the overhead fit's median falls below 0, and the 40 ms the idle arrivals showed outside it is kept.
    fours = [_record(5000.0 + 100 * i, 300, 21, 4) for i in range(10) for _ in range(4)]
    records = sorted([r for r in _recording() if r.time < 5000] + fours, key=lambda r: r.time)
    assert calibrated(PerfModel({}, {}, BASE), ["local"], [], records).engine("local").request_overhead_s \
        == pytest.approx(0.04)


def test_a_hosted_backends_ttft_and_speed_percentiles_come_from_its_recorded_requests() -> None:
    # 20 requests: TTFT 0.1, 0.2, ... 2.0 s; 11 tokens in 1 s after the first (10 tok/s) or 2 s (5 tok/s).
    records = [TrafficRecord(10.0 * i, "t", "chat", 100, 11, recorded=Recorded(
        "openai", "ok", 0.0, 0.1 * (i + 1), 0.1 * (i + 1) + (1.0 if i % 4 else 2.0))) for i in range(20)]
    perf = calibrated(PerfModel({}, {}), [], ["openai", "other"], records)
    api = perf.hosted_model("openai")
    assert (api.ttft_p50_s, api.ttft_p95_s) == (pytest.approx(1.0), pytest.approx(1.9))  # nearest rank: 10th, 19th
    assert (api.tokens_per_s_p50, api.tokens_per_s_p05) == (pytest.approx(10.0), pytest.approx(5.0))
    assert perf.hosted_model("other") == perf.default_hosted  # served nothing: as it was
