"""A request asking for structured output passes over our engine (it would refuse it with a 400) in
every strategy, keeps a vLLM engine (guided decoding), and still reaches our engine when nothing else
serves it, so the engine's 400 names the field."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from local_engine import protocol
from policies.backend_kinds import GUIDED_FIELDS
from policies.calibration import Calibration
from policies.decide import decide
from policies.decision import RouteDecision
from policies.facts import build_facts
from policies.live import HealthView
from policies.structured_output import asked_field
from policies.tokens import TokenCounter

from .support import NOW, compiled, engine, facts, live

HEAD = """
backends:
  local: {kind: engine, model: smollm2}
  elsewhere: {kind: openai, base_url: "http://ours/v1", state: hybridgw}
  vllm: {kind: openai, base_url: "http://vllm/v1", state: vllm, kv_bytes_per_token: 23040}
  openai: {kind: openai, base_url: "http://up/v1"}
models:
  chat:
    deployments:
      - {backend: local, model: smollm2}
      - {backend: elsewhere, model: smollm2}
      - {backend: vllm, model: smollm2}
      - {backend: openai, model: gpt-4o-mini}
  tiny:
    deployments: [{backend: local, model: smollm2}]
slos:
  fast: {ttft_p95_s: 5.0}
"""
RULES = {
    "kv_fit": "  - {name: r, strategy: kv_fit, local: [local, elsewhere, vllm], spill: [openai]}\n",
    "slo_cost": "  - {name: r, strategy: slo_cost, candidates: [local, elsewhere, vllm, openai], slo: fast}\n",
    "cheapest_within_slo": "  - {name: r, strategy: cheapest_within_slo, candidates: [local, elsewhere, vllm, openai],"
                           " slo: fast}\n",
    "prefix_affinity": "  - {name: r, strategy: prefix_affinity, local: [local, elsewhere, vllm], spill: [openai]}\n",
    "first_match": "  - {name: r, route: [local, elsewhere, vllm, openai]}\n",
}
ENGINES = ("local", "elsewhere", "vllm")
JSON = "response_format"
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


def _decide(strategy: str | None, field: str, model: str = "chat", health: dict[str, HealthView] | None = None,
            embeddings: bool = False) -> RouteDecision:
    policy = compiled(HEAD + ("rules:\n" + RULES[strategy] if strategy else ""))
    state = live({b: engine(free=1000, prefill_tps=1000.0) for b in ENGINES}, health)
    asked = dataclasses.replace(facts(model=model, blocks=dict.fromkeys(ENGINES, 13),
                                      costs={"openai": 1e-4}), structured_output=field, embeddings=embeddings)
    return decide(policy, asked, state)


def _backends(decision: RouteDecision) -> list[str]:
    return [t.backend for t in decision.targets]


@pytest.mark.parametrize("strategy", [*RULES, None])
def test_our_engines_are_passed_over_and_vllm_kept(strategy: str | None) -> None:
    plain = _decide(strategy, "")
    assert {"local", "elsewhere"} <= set(_backends(plain))  # without the field: as before
    asked = _decide(strategy, JSON)
    assert _backends(asked) == [b for b in _backends(plain) if b not in ("local", "elsewhere")]
    assert "vllm" in _backends(asked) and "openai" in _backends(asked)
    order = ", ".join(b for b in _backends(plain) if b in ("local", "elsewhere"))  # in the outcome's order
    assert asked.reason == f"{plain.reason}; response_format asks for structured output: passed over {order} " \
                           "(cannot constrain its output)"


def test_with_nothing_else_our_engine_still_gets_it_and_says_why() -> None:
    """Its refusal (400 naming the field) is the answer: better than a 503 that a retry cannot fix."""
    decision = _decide("kv_fit", "guided_json", model="tiny")
    assert _backends(decision) == ["local"] and not decision.refusal
    assert decision.reason.endswith("; guided_json asks for structured output, which local cannot constrain, "
                                    "and no other target serves it (refused there)")


def test_an_open_hosted_circuit_is_a_retry_not_our_engine_s_refusal() -> None:
    open_ = HealthView(state="open", retry_at=NOW + 7.0, consecutive_failures=3)
    decision = _decide("first_match", JSON, health={"openai": open_, "vllm": open_})
    assert _backends(decision) == [] and decision.refusal == "no_healthy_backend"
    assert decision.retry_after_s >= 7.0


@pytest.mark.parametrize(("body", "field"), [
    ({}, ""),
    ({"response_format": None}, ""),
    ({"response_format": {"type": "text"}}, ""),
    ({"response_format": {"type": "json_object"}}, JSON),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}}, JSON),
    ({"response_format": "json"}, JSON),
    ({"response_format": {}}, JSON),  # the engine refuses it too (type None is not text)
    ({"guided_json": {"type": "object"}}, "guided_json"),
    ({"guided_choice": ["a", "b"]}, "guided_choice"),
    ({"guided_regex": None}, ""),
    ({"tools": [TOOL]}, "tool_choice"),  # tools without tool_choice: "auto"
    ({"tools": [TOOL], "tool_choice": "required"}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice"),
    ({"tools": [TOOL], "tool_choice": "none"}, ""),
    ({"tools": []}, ""),
    ({"functions": [TOOL["function"]]}, "function_call"),
    ({"functions": [TOOL["function"]], "function_call": "none"}, ""),
])
def test_the_field_that_asks_is_read_as_the_engine_reads_it(body: dict[str, Any], field: str) -> None:
    assert asked_field(body) == field
    refused = field != ""
    try:
        request = protocol.ChatCompletionRequest(messages=[{"role": "user", "content": "x"}], **body)
        request.refuse_tool_calls()
        request.sampling_params(4, None)
    except protocol.ProtocolError as exc:
        assert refused and exc.param == field
    else:
        assert not refused


def test_the_guided_fields_are_the_engine_s() -> None:
    assert GUIDED_FIELDS == protocol._GUIDED_FIELDS


def test_build_facts_carries_the_field() -> None:
    policy = compiled(HEAD)
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}}
    built = build_facts(policy, body, "default", live(), counter=TokenCounter(), calibration=Calibration())
    assert built.structured_output == JSON
    body["response_format"] = {"type": "text"}
    assert build_facts(policy, body, "default", live(), counter=TokenCounter(), calibration=Calibration()) \
        .structured_output == ""
