"""What build_facts looks up once per compiled policy (CompiledPolicy.deployments) follows a reload:
a new price, a new deployment order or a backend that became an engine shows in the next facts."""
from __future__ import annotations

import textwrap
from types import MappingProxyType

import pytest

from policies.loader import load_policy
from policies.router import PolicyRouter

from .support import NOW, engine, local_and_openai

POLICY = local_and_openai(
    'base_url: "http://127.0.0.1:9/v1", price: {input_usd_per_mtok: 1.0, output_usd_per_mtok: 2.0}',
    openai='base_url: "http://127.0.0.1:9/v1"') + """\
prices:
  gpt-4o-mini: {input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}
"""
BODY = {"model": "chat", "max_tokens": 100, "messages": [{"role": "user", "content": "tiktoken is great!"}]}


def _router(text: str) -> PolicyRouter:
    router = PolicyRouter(load_policy(textwrap.dedent(text), "test.yaml", {}), clock=lambda: NOW)
    router.poller.snapshots = MappingProxyType({"local": engine()})
    return router


def test_reload_replaces_the_prices_and_deployments_build_facts_uses() -> None:
    router = _router(POLICY)
    before = router.decider.build_facts(BODY, "default")
    assert before.est_cost_usd == pytest.approx({"local": 13e-6 + 100 * 2e-6, "openai": 13 * 0.15e-6 + 100 * 0.6e-6})
    cached = router.policy.current.deployments
    assert router.policy.current.deployments is cached  # built once per compiled policy

    changed = POLICY.replace("input_usd_per_mtok: 1.0", "input_usd_per_mtok: 5.0") \
        .replace("gpt-4o-mini: {input_usd_per_mtok: 0.15", "gpt-4o-mini: {input_usd_per_mtok: 0.3")
    router.reload(load_policy(textwrap.dedent(changed), "test.yaml", {}))
    after = router.decider.build_facts(BODY, "default")
    assert after.est_cost_usd == pytest.approx({"local": 13 * 5e-6 + 100 * 2e-6, "openai": 13 * 0.3e-6 + 100 * 0.6e-6})

    hosted_only = POLICY.replace("      - {backend: local, model: smollm2}\n", "")
    router.reload(load_policy(textwrap.dedent(hosted_only), "test.yaml", {}))
    facts = router.decider.build_facts(BODY, "default")
    assert set(facts.est_cost_usd) == {"openai"} and facts.blocks_needed == {} and facts.kv_bytes == {}


def test_deployments_follow_the_alias_order_with_the_calibration_key() -> None:
    router = _router(POLICY)
    rows = router.policy.current.deployments["chat"]
    assert [(d.backend, d.engine, d.calibration_key) for d in rows] == [
        ("local", True, "local/smollm2@o200k_base"), ("openai", False, "openai/gpt-4o-mini@o200k_base")]


PREFIX_RULE = """
rules:
  - name: pool
    strategy: prefix_affinity
    local: [local]
    spill: [openai]
"""


def test_prefix_occupancy_is_built_only_for_a_policy_or_shadow_with_prefix_affinity() -> None:
    router = _router(POLICY)
    assert dict(router.live.live_state().prefix_occupancy) == {}  # no rule reads it: not even a 0 share
    router.set_shadow(load_policy(textwrap.dedent(POLICY + PREFIX_RULE), "shadow.yaml", {}))
    assert dict(router.live.live_state().prefix_occupancy) == {"local": 0.0}
    router.set_shadow(None)
    assert dict(router.live.live_state().prefix_occupancy) == {}
    router.reload(load_policy(textwrap.dedent(POLICY + PREFIX_RULE), "test.yaml", {}))
    assert dict(router.live.live_state().prefix_occupancy) == {"local": 0.0}


def test_a_teams_usable_backends_follow_a_reload() -> None:
    router = _router(POLICY + "teams:\n  red: {}\n")
    facts = router.decider.build_facts(BODY, "red")
    assert [t.backend for t in router.decider.route(facts).targets] == ["local", "openai"]
    router.reload(load_policy(textwrap.dedent(POLICY + "teams:\n  red: {allowed_backends: [openai]}\n"), "test.yaml", {}))
    facts = router.decider.build_facts(BODY, "red")
    assert [t.backend for t in router.decider.route(facts).targets] == ["openai"]
    assert router.policy.current.usable(router.policy.current.aliases["chat"], "blue") == {"local", "openai"}
