"""The replay of hand-built traffic whose outcome is known: the real decide() over simulated backends."""
from __future__ import annotations

from dataclasses import replace

import pytest

from policies.compiled import compile_policy
from policies.loader import LoadedPolicy
from policies.perf_model import HostedModel, PerfModel
from policies.replay.outcome import Outcomes
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.summary import summarize
from policies.replay.traffic import TrafficRecord
from tests.unit.policies.replay.support import (
    ALL_HOSTED,
    ALL_LOCAL,
    FIXED_HOSTED,
    KV_FIT,
    PERF,
    SIMPLE_ENGINE,
    policy,
)

# 15 requests at once, each 100 prompt + 60 output tokens = 10 KV blocks; the engine has 100.
BURST = [TrafficRecord(1_800_000_000.0, "t", "chat", 100, 60, max_tokens=60) for _ in range(15)]
# kv_fit with room in its queue limit for the whole burst, so that KV alone decides: with the default (4) the
# burst, sent inside one poll interval and all counted as waiting (LiveState.num_waiting), spills from the 6th.
KV_ONLY = policy("- {name: fit, strategy: kv_fit, local: [local], spill: [openai], max_waiting: 15}\n")


def _run(loaded: LoadedPolicy, traffic: list[TrafficRecord], perf: PerfModel = PERF, seed: int = 0) -> Outcomes:
    return replay(loaded, traffic, ReplaySetup(perf, {}, seed))


def test_a_burst_larger_than_the_kv_pool_spills_exactly_the_requests_that_do_not_fit() -> None:
    out = _run(KV_ONLY, BURST)
    assert out.backend == ["local"] * 10 + ["openai"] * 5
    assert all(out.ttft[i] == pytest.approx(0.2) for i in range(10, 15))  # hosted: no queue
    assert _run(KV_FIT, BURST).backend == ["local"] * 5 + ["openai"] * 10  # the queue limit binds first
    summary = summarize("kv_fit", compile_policy(KV_ONLY.policy, {}), BURST, out, PERF, None)
    assert summary.served_by == {"local": 10, "openai": 5}
    assert summary.hosted_cost_usd == pytest.approx(5 * (100 * 1.0 + 60 * 2.0) / 1e6)
    assert summary.all_hosted_cost_usd == pytest.approx(15 * (100 * 1.0 + 60 * 2.0) / 1e6)
    assert summary.refused == {}


def test_an_all_local_policy_queues_the_burst_instead() -> None:
    out = _run(ALL_LOCAL, BURST)
    assert out.backend == ["local"] * 15
    assert max(out.queue_max["local"]) >= 10  # they wait in the engine's queue
    first, last = out.e2e[0], out.e2e[14]
    assert first is not None and last is not None and last > first
    assert all(t is not None and t >= 0.1 for t in out.ttft)  # every one waits at least a prefill step
    kv_fit = _run(KV_FIT, BURST)
    assert max(t for t in out.ttft if t is not None) > max(t for t in kv_fit.ttft if t is not None)


def test_replay_is_deterministic_for_a_seed() -> None:
    hosted = HostedModel(ttft_p50_s=0.4, ttft_p95_s=1.5, requests_per_minute=40)
    perf = PerfModel({}, {}, SIMPLE_ENGINE, hosted)
    traffic = [TrafficRecord(1_800_000_000.0 + 0.05 * i, "t", "chat", 50 + 37 * i % 400, 5 + 13 * i % 90)
               for i in range(300)]
    a, b = _run(KV_FIT, traffic, perf, seed=7), _run(KV_FIT, traffic, perf, seed=7)
    assert (a.backend, a.ttft, a.e2e, a.refusal) == (b.backend, b.ttft, b.e2e, b.refusal)
    c = _run(KV_FIT, traffic, perf, seed=8)
    assert c.ttft != a.ttft  # the seed does drive the hosted response times


def test_hosted_rate_limit_refuses_beyond_it_and_opens_the_circuit() -> None:
    perf = PerfModel({}, {}, SIMPLE_ENGINE, HostedModel(ttft_p50_s=0.2, ttft_p95_s=0.2, requests_per_minute=3))
    traffic = [TrafficRecord(1_800_000_000.0 + i, "t", "chat", 10, 5) for i in range(6)]
    out = _run(ALL_HOSTED, traffic, perf)
    assert out.backend[:3] == ["openai"] * 3
    assert out.backend[3:] == [""] * 3
    assert set(out.refusal[3:]) <= {"all_targets_failed", "no_healthy_backend"}


def test_slo_attainment_and_unknown_models() -> None:
    traffic = [*BURST, TrafficRecord(1_800_000_001.0, "t", "nope", 10, 5)]
    out = _run(ALL_LOCAL, traffic)
    summary = summarize("local", compile_policy(ALL_LOCAL.policy, {}), traffic, out, PERF, None)
    assert summary.refused == {"model_not_found": 1}
    assert summary.ttft_slo_s == 0.5  # the policy's one SLO
    met = sum(1 for t in out.ttft if t is not None and t <= 0.5)
    assert summary.slo_attainment == pytest.approx(met / 16)  # refused requests miss it
    assert 0 < met < 15
    assert summarize("x", compile_policy(ALL_LOCAL.policy, {}), traffic, out, PERF, 100.0).slo_attainment == 15 / 16


def test_team_slo_and_cheapest_within_slo_runs() -> None:
    loaded = policy("- {name: cheap, strategy: cheapest_within_slo, candidates: [local, openai], slo: fast}\n",
                    "teams:\n  t: {slo: fast}\n")
    traffic = [TrafficRecord(1_800_000_000.0 + 0.01 * i, "t", "chat", 200, 30) for i in range(50)]
    out = _run(loaded, traffic, PerfModel({}, {}, SIMPLE_ENGINE, FIXED_HOSTED))
    assert set(out.backend) <= {"local", "openai"} and all(out.backend)
    assert all(r == "cheap" for r in out.rule)


def test_shared_prefixes_hit_the_simulated_prefix_cache() -> None:
    # Prefill: 0.1 s per step + 1 ms per uncached token; requests 1 s apart never overlap.
    perf = PerfModel({}, {}, replace(SIMPLE_ENGINE, prefill_per_token_s=0.001), FIXED_HOSTED)
    traffic = [TrafficRecord(1_800_000_000.0 + i, "t", "chat", 600, 10, prefix_id="system", prefix_tokens=512)
               for i in range(5)]
    shared = _run(ALL_LOCAL, traffic, perf)
    alone = _run(ALL_LOCAL, [replace(r, prefix_id="", prefix_tokens=0) for r in traffic], perf)
    assert alone.ttft == pytest.approx([0.7] * 5)
    assert shared.ttft == pytest.approx([0.7] + [0.1 + 0.001 * (600 - 512)] * 4)  # 32 blocks cached
    two = _run(ALL_LOCAL, [replace(r, prefix_id="ab"[i % 2]) for i, r in enumerate(traffic)], perf)
    assert two.ttft == pytest.approx([0.7, 0.7, 0.188, 0.188, 0.188])  # another id's prefix is not a hit


def test_time_series_follow_the_traffic() -> None:
    # 60 s of traffic: the first half all at once (the burst), then one request every 3 s.
    traffic = [*BURST, *(TrafficRecord(1_800_000_030.0 + 3 * i, "t", "chat", 100, 60, max_tokens=60)
                        for i in range(11))]
    out = _run(KV_ONLY, traffic)
    assert sum(out.served["local"]) + sum(out.served["openai"]) == len(traffic)
    assert out.served["openai"][0] == 5  # the burst's spill lands in the first bucket
    assert max(out.kv_sum["local"][:1]) > 0


def test_request_overhead_delays_the_client_but_does_not_hold_the_engine() -> None:
    # Two requests 0.5 s apart on an idle engine (prefill 0.1 s, decode 0.01 s per step, 10 tokens out).
    traffic = [TrafficRecord(1_800_000_000.0 + 0.5 * i, "t", "chat", 100, 10, max_tokens=10) for i in range(2)]
    plain = _run(ALL_LOCAL, traffic)
    slow = _run(ALL_LOCAL, traffic, PerfModel({}, {}, replace(SIMPLE_ENGINE, request_overhead_s=0.3), FIXED_HOSTED))
    for i in range(2):
        assert slow.ttft[i] == pytest.approx((plain.ttft[i] or 0.0) + 0.3)  # the second is not queued behind it
        assert slow.e2e[i] == pytest.approx((plain.e2e[i] or 0.0) + 0.3)
