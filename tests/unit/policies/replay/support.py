"""Builders for replay tests: a small engine model whose timings are easy to reason about."""
from __future__ import annotations

import textwrap

from policies.loader import LoadedPolicy, load_policy
from policies.perf_model import EngineModel, HostedModel, PerfModel

from ..support import local_and_openai

# One prefill step: 0.1 s; one decode step: 0.01 s; 100 blocks of 16 tokens.
SIMPLE_ENGINE = EngineModel(source="test", prefill_fixed_s=0.1, prefill_per_token_s=0.0, decode_fixed_s=0.01,
                            decode_per_seq_s=0.0, decode_per_context_token_s=0.0, num_blocks=100, max_model_len=4096)
# Hosted: TTFT exactly 0.2 s, 1000 tokens/s.
FIXED_HOSTED = HostedModel(source="test", ttft_p50_s=0.2, ttft_p95_s=0.2, tokens_per_s_p50=1000, tokens_per_s_p05=1000)
PERF = PerfModel({}, {}, SIMPLE_ENGINE, FIXED_HOSTED)
PRICES = {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}
# The backends, models and prices the replay tests share; the CLI tests' policy file adds a kv_fit rule.
_HEAD = "version: 1\n" + local_and_openai(openai='base_url: "http://hosted/v1"') + """\
prices:
  gpt-4o-mini: {input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0}
"""
KV_FIT_POLICY_FILE = _HEAD + "rules:\n  - {name: fit, strategy: kv_fit, local: [local], spill: [openai]}\n"


def policy(rules: str, extra: str = "") -> LoadedPolicy:
    text = (_HEAD + "slos:\n  fast: {ttft_p95_s: 0.5}\n" + textwrap.dedent(extra)
            + "rules:\n" + textwrap.indent(textwrap.dedent(rules), "  "))
    return load_policy(text, "test.yaml", {})


KV_FIT = policy("- {name: fit, strategy: kv_fit, local: [local], spill: [openai]}\n")
ALL_LOCAL = policy("- {name: all-local, route: [local]}\n")
ALL_HOSTED = policy("- {name: all-hosted, route: [openai]}\n")
