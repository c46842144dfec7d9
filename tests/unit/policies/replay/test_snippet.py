"""The policy snippet and model file `hybridgw size` writes load as a policy and a model."""
from __future__ import annotations

import yaml

from policies.loader import load_policy
from policies.perf_model import perf_model_from_mapping
from policies.replay.sizing import size_engine
from policies.replay.snippet import engine_command, seasonal_snippet, sized_model_file
from tests.unit.policies.replay.test_sizing import DEMAND, MODEL


def test_snippet_is_a_valid_policy_with_one_rule_per_window() -> None:
    busy = size_engine(DEMAND, MODEL, 90.0, slo_s=1.0)  # 12 replicas
    quiet = size_engine(DEMAND.__class__(DEMAND.isl, DEMAND.osl, DEMAND.spill_cost_usd, 1.0), MODEL, 90.0, 1.0)
    text = seasonal_snippet([(8, 20, busy), (20, 24, quiet)], busy, "chat", "smollm2", "gpt-4o-mini")
    policy = load_policy(text, "snippet.yaml", {}).policy
    assert len(policy.backends) == busy.replicas + 1
    assert [r.name for r in policy.rules] == ["utc-08-20", "utc-20-24"]
    assert len(policy.rules[0].local) == 12 and len(policy.rules[1].local) == quiet.replicas < 12
    assert policy.rules[1].when is not None
    assert "--max-model-len 1008 --max-num-seqs 64" in engine_command("smollm2", busy)


def test_sized_model_file_carries_the_shape() -> None:
    s = size_engine(DEMAND, MODEL, 90.0, slo_s=1.0)
    engine = perf_model_from_mapping(yaml.safe_load(sized_model_file(MODEL, s))).engine("any")
    assert (engine.max_model_len, engine.max_num_seqs, engine.num_blocks) == (1008, 64, s.kv_blocks)
    assert engine.decode_fixed_s == MODEL.decode_fixed_s
