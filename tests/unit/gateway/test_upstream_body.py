"""The upstream body: OpenAI's fields only (plus a backend's allowed extras), the policy's own
max_tokens default and team priority added, nothing a client sends configures a backend."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.upstream_body import BodyRules, build, rules_for
from policies.schema import BackendSpec
from tests.unit.policies.support import compiled

CHAT = {"model": "alias", "messages": [{"role": "user", "content": "hi"}]}
CONFIG_FIELDS = ["api_base", "base_url", "api_key", "extra_headers", "headers", "custom_llm_provider", "timeout",
                 "api_version", "aws_access_key_id", "aws_region_name", "vertex_project", "vertex_credentials",
                 "mock_response", "metadata", "extra_body", "num_retries", "fallbacks", "service_tier", "store",
                 "priority", "drop_params", "organization", "litellm_params"]

POLICY = """
backends:
  local: {kind: engine, model: smollm2}
  vllm: {kind: openai, base_url: "http://gpu/v1", state: vllm, extra_body_fields: [min_tokens, top_k],
         default_max_tokens: 1000}
  hosted: {kind: openai, base_url: "http://up/v1"}
models:
  chat: {deployments: [{backend: local, model: smollm2}, {backend: vllm, model: m}, {backend: hosted, model: h}]}
teams:
  gold: {priority: -5}
"""


def test_config_fields_never_go_upstream() -> None:
    body = {**CHAT, **{name: "http://evil.example/v1" for name in CONFIG_FIELDS}, "temperature": 0.5}
    out = build("chat/completions", body, "gpt-4o-mini", BodyRules(), stream=False)
    assert out.body == {"model": "gpt-4o-mini", "messages": CHAT["messages"], "temperature": 0.5}
    assert out.dropped == tuple(sorted(CONFIG_FIELDS))


def test_openai_fields_pass_and_model_is_the_targets() -> None:
    fields = {"max_completion_tokens": 9, "n": 2, "stop": ["x"], "seed": 1, "tools": [], "tool_choice": "none",
              "parallel_tool_calls": False, "response_format": {"type": "text"}, "logprobs": True,
              "top_logprobs": 2, "logit_bias": {"1": 2}, "presence_penalty": 0.1, "frequency_penalty": 0.2,
              "user": "u", "reasoning_effort": "low", "modalities": ["text"], "prediction": {"type": "content"}}
    out = build("chat/completions", {**CHAT, **fields}, "target-model", BodyRules(), stream=False)
    assert out.body == {**CHAT, **fields, "model": "target-model"} and out.dropped == ()


def test_each_endpoint_has_its_own_list() -> None:
    emb = build("embeddings", {"model": "e", "input": "x", "dimensions": 8, "messages": []}, "e", BodyRules(
        default_max_tokens=50), stream=False)
    assert emb.body == {"model": "e", "input": "x", "dimensions": 8} and emb.dropped == ("messages",)
    comp = build("completions", {"model": "c", "prompt": "p", "echo": True, "messages": []}, "c", BodyRules(),
                 stream=False)
    assert comp.body == {"model": "c", "prompt": "p", "echo": True}


def test_streamed_requests_ask_for_usage_and_nothing_else_of_the_clients_stream_options() -> None:
    options = {"include_usage": False, "continuous_usage_stats": True}
    out = build("chat/completions", {**CHAT, "stream": True, "stream_options": options}, "m",
                BodyRules(), stream=True)
    assert out.body["stream_options"] == {"include_usage": True}


def test_extras_only_where_the_policy_allows_them() -> None:
    body = {**CHAT, "top_k": 5, "ignore_eos": True, "min_tokens": 3, "priority": -100}
    policy = compiled(POLICY)
    local = build("chat/completions", body, "m", rules_for(policy, "local", "default"), stream=False)
    vllm = build("chat/completions", body, "m", rules_for(policy, "vllm", "default"), stream=False)
    hosted = build("chat/completions", body, "m", rules_for(policy, "hosted", "default"), stream=False)
    assert (local.body["top_k"], local.body["ignore_eos"], "min_tokens" in local.body) == (5, True, False)
    assert (vllm.body["top_k"], vllm.body["min_tokens"], "ignore_eos" in vllm.body) == (5, 3, False)
    assert hosted.dropped == ("ignore_eos", "min_tokens", "priority", "top_k")
    assert all("priority" not in b.body for b in (local, vllm, hosted))  # never the client's


def test_guided_fields_reach_our_engine_to_be_refused_and_nowhere_unasked() -> None:
    # Our engine refuses guided_* with a 400 naming the field; dropped on the way, the client would get free
    # text in place of the JSON it asked for. Other backends take them only when the policy allows them.
    body = {**CHAT, "guided_json": {"type": "object"}, "guided_choice": ["a", "b"]}
    policy = compiled(POLICY)
    local = build("chat/completions", body, "m", rules_for(policy, "local", "default"), stream=False)
    hosted = build("chat/completions", body, "m", rules_for(policy, "hosted", "default"), stream=False)
    assert (local.body["guided_json"], local.body["guided_choice"]) == ({"type": "object"}, ["a", "b"])
    assert hosted.dropped == ("guided_choice", "guided_json")


def test_guided_fields_reach_our_engine_under_any_kind_or_extras_list() -> None:
    # Polled as ours (`state: hybridgw`, an engine elsewhere) or given its own extras list, our engine still
    # gets guided_* to refuse them: dropped, a local-only alias answered free text for guided_json.
    policy = compiled(POLICY.replace("models:", """  remote: {kind: openai, base_url: "http://ours/v1", state: hybridgw}
  listed: {kind: engine, model: smollm2, extra_body_fields: [min_tokens]}
models:"""))
    body = {**CHAT, "guided_json": {"type": "object"}, "guided_regex": "a+"}
    for backend in ("remote", "listed"):
        sent = build("chat/completions", body, "m", rules_for(policy, backend, "default"), stream=False)
        assert (sent.body["guided_json"], sent.body["guided_regex"], sent.dropped) == ({"type": "object"}, "a+", ())


def test_priority_comes_from_the_team_and_only_to_engines() -> None:
    policy = compiled(POLICY)
    body = {**CHAT, "priority": 7}
    assert build("chat/completions", body, "m", rules_for(policy, "local", "gold"), stream=False).body["priority"] == -5
    assert build("chat/completions", body, "m", rules_for(policy, "vllm", "gold"), stream=False).body["priority"] == -5
    assert "priority" not in build("chat/completions", body, "m", rules_for(policy, "hosted", "gold"),
                                   stream=False).body
    assert rules_for(policy, "removed-by-a-reload", "gold") == BodyRules()


@pytest.mark.parametrize(("backend", "client", "sent"), [
    ("local", {}, 512),                                 # kind engine: 512 unless the policy says otherwise
    ("vllm", {}, 1000),                                 # the backend's default_max_tokens
    ("hosted", {}, None),                               # hosted: the provider's own default
    ("local", {"max_tokens": 2000}, 2000),              # the client's own value is kept, not clamped
    ("local", {"max_completion_tokens": 7}, None),      # ... in either spelling (max_tokens not added)
    ("local", {"max_tokens": None}, 512),
])
def test_default_max_tokens(backend: str, client: dict, sent: int | None) -> None:
    out = build("chat/completions", {**CHAT, **client}, "m", rules_for(compiled(POLICY), backend, "default"),
                stream=False)
    assert out.body.get("max_tokens") == sent


def test_policy_owned_fields_cannot_be_allowed_as_extras() -> None:
    with pytest.raises(ValidationError, match="priority"):
        BackendSpec(kind="engine", extra_body_fields=["priority"])
    assert BackendSpec(kind="engine", extra_body_fields=[]).body_extras == frozenset()
