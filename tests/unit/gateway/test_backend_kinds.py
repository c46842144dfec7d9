"""Backend kinds come from one registry (policies.backend_kinds): the schema accepts exactly its kinds,
and the checks, the catalog, the backend factory, usage's provider name and the engine defaults all
read a kind's entry — no kind name is spelled out anywhere else."""
from __future__ import annotations

import typing

import pytest

from gateway.backends.factory import build_backend
from gateway.backends.litellm_backend import LiteLLMBackend
from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.catalog import build_catalog
from gateway.usage_emit import provider_of
from policies.backend_kinds import BACKEND_KINDS, ENGINE_DEFAULT_MAX_TOKENS
from policies.checks import policy_problems
from policies.schema import BackendSpec, Policy


def _policy(backends: dict[str, dict[str, object]]) -> Policy:
    first = next(iter(backends))
    return Policy.model_validate({"backends": backends,
                                  "models": {"m": {"deployments": [{"backend": first, "model": "x"}]}}})


def test_the_schema_takes_exactly_the_registered_kinds() -> None:
    assert set(typing.get_args(BackendSpec.model_fields["kind"].annotation)) == set(BACKEND_KINDS)
    with pytest.raises(ValueError, match="Input should be 'openai', 'litellm' or 'engine'"):
        BackendSpec.model_validate({"kind": "bogus"})


def test_each_kind_builds_its_adapter_and_names_its_provider() -> None:
    policy = _policy({"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                      "claude": {"kind": "litellm", "model": "anthropic"},
                      "gw": {"kind": "litellm"},
                      "local": {"kind": "engine", "model": "smollm2"}})
    catalog = build_catalog(policy, {}, {"local": "http://127.0.0.1:8/v1"})
    built = {name: build_backend(spec) for name, spec in catalog.backends.items()}
    assert [type(built[n]) for n in ("up", "claude", "local")] == [
        OpenAIHTTPBackend, LiteLLMBackend, OpenAIHTTPBackend]
    providers = {name: provider_of(spec) for name, spec in catalog.backends.items()}
    assert providers == {"up": "openai", "claude": "anthropic", "gw": "litellm", "local": "hybridgw.engine"}


def test_base_url_rules_and_engine_defaults_follow_the_kind() -> None:
    policy = _policy({"up": {"kind": "openai"}, "local": {"kind": "engine", "model": "smollm2"},
                      "far": {"kind": "engine", "base_url": "http://127.0.0.1:7/v1"}})
    assert [(loc, msg) for loc, msg in policy_problems(policy) if loc[0] == "backends"] == [
        (("backends", "up", "base_url"), "a backend of kind openai needs base_url")]
    catalog = build_catalog(policy, {})
    assert catalog.absent == {"up": "openai backend without base_url", "local": "engine not started"}
    local, far, up = policy.backends["local"], policy.backends["far"], policy.backends["up"]
    assert (local.spawned, far.spawned, up.spawned) == (True, False, False)
    assert (local.state_source, up.state_source) == ("hybridgw", "none")
    assert (local.max_tokens_default, up.max_tokens_default) == (ENGINE_DEFAULT_MAX_TOKENS, None)
    assert "ignore_eos" in local.body_extras and up.body_extras == frozenset()
