"""The lines `hybridgw serve` prints at start: which backends are on (and where), which are off and
why, and which backends serve each alias."""
from __future__ import annotations

import textwrap

from gateway.catalog import build_catalog
from gateway.startup_lines import backend_lines
from policies.loader import load_default_policy, load_policy

POLICY = """
backends:
  local: {kind: engine, model: smollm2}
  gpu: {kind: openai, base_url: "http://gpu:8000/v1", state: vllm, default_max_tokens: 1000}
  openai: {kind: openai, base_url: "https://api.openai.com/v1", api_key_env: K, requires_env: K}
  claude: {kind: litellm, model: anthropic}
models:
  chat: {deployments: [{backend: local, model: smollm2}, {backend: gpu, model: m}, {backend: openai, model: x}]}
  private: {deployments: [{backend: local, model: smollm2}], teams: [research]}
  hosted: {deployments: [{backend: openai, model: x}]}
"""


def test_backends_on_and_off_and_where_each_alias_goes() -> None:
    loaded = load_policy(textwrap.dedent(POLICY), "p.yaml", {})
    lines = backend_lines(loaded, build_catalog(loaded.policy, {}, {}))
    assert lines == [
        "hybridgw: backend local: off (engine not started)",
        "hybridgw: backend gpu: on, openai at http://gpu:8000/v1; max_tokens 1000 when the client sets none",
        "hybridgw: backend claude: on, litellm at its provider",
        "hybridgw: backend openai: off (its requires_env variable K is not set)",
        "hybridgw: model chat -> gpu",
        "hybridgw: model private -> no backend on (refused) (teams: research)",
    ]


def test_default_policy_with_its_engine_running() -> None:
    loaded = load_default_policy({})
    lines = backend_lines(loaded, build_catalog(loaded.policy, {}, {"local": "http://127.0.0.1:9/v1"}))
    assert lines == [
        ("hybridgw: backend local: on, engine smollm2 at http://127.0.0.1:9/v1; max_tokens 512 when the client"
         " sets none"),
        "hybridgw: backend openai: off (its requires_env variable OPENAI_API_KEY is not set)",
        "hybridgw: model smollm2 -> local",
    ]
    hosted = load_default_policy({"OPENAI_API_KEY": "k"})
    lines = backend_lines(hosted, build_catalog(hosted.policy, {"OPENAI_API_KEY": "k"}, {"local": "http://e/v1"}))
    assert "hybridgw: backend openai: on, openai at https://api.openai.com/v1" in lines
    assert lines[-2:] == ["hybridgw: model smollm2 -> local, openai", "hybridgw: model gpt-4o-mini -> openai"]
