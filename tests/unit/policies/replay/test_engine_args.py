"""A policy's engine_args shape the simulated engine as they shape the spawned one."""
from __future__ import annotations

import pytest

from policies.loader import load_policy
from policies.perf_model import EngineModel, PerfModelError
from policies.replay.engine_args import prefix_caching_off, shaped_by_args
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.traffic import TrafficRecord
from tests.unit.policies.replay.support import PERF, policy


def test_flags_in_both_forms_and_the_pool_recut() -> None:
    base = EngineModel(num_blocks=1000, block_size=16, kv_bytes_per_token=1000)
    shaped = shaped_by_args(base, ["--max-num-seqs", "8", "--max-model-len=2048", "--kv-dtype", "fp8",
                                   "--threads", "2", "--no-prefix-caching"])
    assert (shaped.max_num_seqs, shaped.max_model_len, shaped.kv_bytes_per_token) == (8, 2048, 500)
    assert shaped.num_blocks == 2000  # the same bytes hold twice the fp8 blocks
    assert shaped_by_args(base, ["--kv-cache-bytes", str(64 * 16 * 1000)]).num_blocks == 64
    assert shaped_by_args(base, []) == base
    assert prefix_caching_off(["--no-prefix-caching"]) and not prefix_caching_off(["--max-num-seqs", "4"])
    with pytest.raises(PerfModelError, match="--max-num-seqs takes an integer"):
        shaped_by_args(base, ["--max-num-seqs", "many"])


def test_replay_runs_the_engine_the_policy_spawns() -> None:
    text = """\
version: 1
backends:
  local: {kind: engine, model: smollm2, engine_args: ["--max-num-seqs", "2"]}
models:
  chat: {deployments: [{backend: local, model: smollm2}]}
rules:
  - {name: all-local, route: [local]}
"""
    traffic = [TrafficRecord(1_800_000_000.0, "t", "chat", 20, 30) for _ in range(6)]
    wide = replay(policy("- {name: all-local, route: [local]}\n"), traffic, ReplaySetup(PERF, {}))
    narrow = replay(load_policy(text, "narrow.yaml", {}), traffic, ReplaySetup(PERF, {}))
    # 64 slots: the first request's prefill, then the other five together in the next (mixed) step,
    # which also decodes the first one's token in the same pass (one fixed cost); 2 slots: they wait.
    assert sorted({round(t or 0.0, 6) for t in wide.ttft}) == [0.1, 0.2]
    assert len({round(t or 0.0, 6) for t in narrow.ttft}) >= 3
    assert max(t or 0.0 for t in narrow.ttft) > 0.2 + 29 * 0.01  # a wave waited for a decode to end
