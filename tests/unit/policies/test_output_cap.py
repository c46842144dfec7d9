"""KV holds and costs sized by what an engine may really produce: the client's max_tokens, else the
max_tokens the gateway sends it (the backend's default_max_tokens), not the team's p90."""
from __future__ import annotations

import pytest

from policies.calibration import Calibration
from policies.decide import decide
from policies.facts import build_facts
from policies.tokens import TokenCounter

from .support import compiled, engine, live

POLICY = """
backends:
  local: {kind: engine, model: smollm2, price: {input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0}}
  small: {kind: engine, model: smollm2, default_max_tokens: 64}
  openai: {kind: openai, base_url: "http://up/v1"}
models:
  chat:
    deployments:
      - {backend: local, model: smollm2}
      - {backend: small, model: smollm2}
      - {backend: openai, model: gpt-4o-mini}
prices:
  gpt-4o-mini: {input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}
defaults:
  output_tokens: 300
"""
BODY = {"model": "chat", "messages": [{"role": "user", "content": "tiktoken is great!"}]}  # 13 tokens


def _facts(body, **kw):
    state = live({"local": engine(), "small": engine()})
    return build_facts(compiled(POLICY), body, "default", state, counter=TokenCounter(), calibration=Calibration(),
                       **kw)


def test_no_max_tokens_holds_kv_for_the_engines_cap() -> None:
    f = _facts(BODY, team_p90=20)
    assert (f.expected_output_tokens, f.output_source) == (20, "team_p90")
    assert f.output_tokens_by_backend == {"local": 512, "small": 64, "openai": 20}
    assert f.blocks_needed == {"local": 33, "small": 5}  # (13 + 512) / 16, (13 + 64) / 16
    assert f.kv_bytes["local"] == (13 + 512) * 23040
    # The expected output is still what costs are estimated with, but never more than the cap.
    assert f.est_cost_usd["local"] == pytest.approx(13e-6 + 20 * 2e-6)


def test_expected_output_above_the_cap_is_costed_at_the_cap() -> None:
    f = _facts(BODY)  # the policy's default expectation, 300
    assert f.output_tokens_by_backend == {"local": 512, "small": 64, "openai": 300}
    assert f.est_cost_usd["openai"] == pytest.approx(13 * 0.15e-6 + 300 * 0.6e-6)


def test_the_clients_max_tokens_wins() -> None:
    f = _facts({**BODY, "max_tokens": 1000})
    assert f.output_tokens_by_backend == {"local": 1000, "small": 1000, "openai": 1000}
    assert f.blocks_needed == {"local": 64, "small": 64}  # 1013 / 16


def test_an_engine_whose_context_cannot_hold_the_cap_never_fits() -> None:
    policy = compiled(POLICY + """
rules:
  - {name: fit, strategy: kv_fit, local: [local], spill: [openai]}
""")
    state = live({"local": engine(max_model_len=400), "small": engine()})
    f = build_facts(policy, BODY, "default", state, counter=TokenCounter(), calibration=Calibration(), team_p90=20)
    decision = decide(policy, f, state)
    assert [t.backend for t in decision.targets] == ["openai"]
