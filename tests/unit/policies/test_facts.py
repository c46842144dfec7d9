"""RequestFacts from a request body, the team and live state."""
from __future__ import annotations

import pytest

from policies.calibration import Calibration
from policies.errors import RoutingError
from policies.facts import build_facts, calibration_key
from policies.tokens import TokenCounter

from .support import compiled, engine, live, local_and_openai

POLICY = local_and_openai("price: {input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0}") + """\
  tiny:
    deployments: [{backend: local, model: smollm2}]
    teams: [research]
teams:
  research:
    default_output_tokens: 64
    tags: {cost_center: r-and-d}
prices:
  gpt-4o-mini: {input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}
defaults:
  output_tokens: 300
"""
BODY = {"model": "chat", "messages": [{"role": "user", "content": "tiktoken is great!"}]}  # 13 tokens


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter()


def _facts(counter, body=BODY, team="default", state=None, cal=None, **kw):
    return build_facts(compiled(POLICY), body, team, state or live({"local": engine()}), counter=counter,
                       calibration=cal or Calibration(), **kw)


def test_counts_kv_blocks_and_costs(counter) -> None:
    f = _facts(counter, {**BODY, "max_tokens": 99})
    assert (f.prompt_tokens, f.expected_output_tokens, f.output_source) == (13, 99, "max_tokens")
    assert f.encoding == "o200k_base"  # the alias's hosted model is gpt-4o-mini
    assert f.blocks_needed == {"local": 7}  # 112 tokens / 16
    assert f.kv_bytes == {"local": 112 * 23040}
    assert f.est_cost_usd["openai"] == pytest.approx(13 * 0.15e-6 + 99 * 0.6e-6)
    assert f.est_cost_usd["local"] == pytest.approx(13 * 1e-6 + 99 * 2e-6)
    assert f.total_tokens == 112


@pytest.mark.parametrize(("extra", "team", "p90", "expected"), [
    ({"max_completion_tokens": 50, "max_tokens": 99}, "default", None, (50, "max_tokens")),
    ({"max_tokens": 10, "n": 3}, "default", None, (30, "max_tokens")),
    ({}, "default", 120, (120, "team_p90")),
    ({}, "research", None, (64, "team_default")),
    ({}, "default", None, (300, "default")),
    ({"max_tokens": -5}, "default", None, (300, "default")),
])
def test_expected_output(counter, extra, team, p90, expected) -> None:
    body = {**BODY, "model": "chat", **extra}
    f = _facts(counter, body, team=team, team_p90=p90)
    assert (f.expected_output_tokens, f.output_source) == expected


def test_calibration_scales_the_local_count(counter) -> None:
    cal = Calibration()
    f = _facts(counter, cal=cal)
    from policies.decision import Target
    cal.observe(calibration_key(Target("local", "smollm2"), f.encoding), counted=13, reported=26)
    f2 = _facts(counter, {**BODY, "max_tokens": 6}, cal=cal)
    assert f2.prompt_tokens == 13 and f2.prompt_tokens_by_backend == {"local": 26, "openai": 13}
    assert f2.blocks_needed == {"local": 2}  # (26 + 6) / 16


def test_unknown_state_means_no_blocks_fact(counter) -> None:
    f = _facts(counter, state=live())
    assert f.blocks_needed == {} and "local" in f.prompt_tokens_by_backend


def test_headers_tags_and_flags(counter) -> None:
    body = {**BODY, "stream": True, "metadata": {"job": "nightly"}}
    headers = {"X-Priority": "high", "Authorization": "Bearer secret", "content-type": "application/json"}
    f = _facts(counter, body, team="research", headers=headers, over_budget=True, now_unix=123.0)
    assert f.headers == {"x-priority": "high"}  # only x-* headers; never the bearer key
    assert f.tags == {"cost_center": "r-and-d", "job": "nightly"}
    assert f.stream and f.over_budget and f.now == 123.0


def test_unknown_model_and_team_not_allowed(counter) -> None:
    with pytest.raises(RoutingError) as info:
        _facts(counter, {**BODY, "model": "gpt-9"})
    assert info.value.code == "model_not_found" and info.value.param == "model"
    with pytest.raises(RoutingError) as info:
        _facts(counter, {**BODY, "model": "tiny"}, team="default")
    assert info.value.code == "model_not_allowed"
    assert _facts(counter, {**BODY, "model": "tiny"}, team="research").encoding == "cl100k_base"
