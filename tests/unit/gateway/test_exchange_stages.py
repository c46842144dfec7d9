"""The request's stages hand on frozen values (gateway/exchange.py): the parsed request, the route plan,
the usage outcome and the ending; a later stage replaces a value, it never edits one. Pure: no sockets."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from gateway.exchange import OK, Ending, Exchange, ParsedRequest, RoutePlan, UsageOutcome
from gateway.outcome import usage_outcome
from gateway.proxy import CHAT, EMBEDDINGS, parse_request
from gateway.schemas import ChatCompletionRequest, EmbeddingRequest, parse_body
from policies.decision import RouteDecision, Target


def _never() -> int:
    raise AssertionError("counted although the upstream reported sane usage")


def test_sane_upstream_usage_is_taken_and_nothing_is_counted() -> None:
    out = usage_outcome({"prompt_tokens": 7, "completion_tokens": 3}, "prompt_tokens", _never, "stop", "m-2026")
    assert out == UsageOutcome(7, 3, "upstream", "stop", "m-2026")


@pytest.mark.parametrize("usage", [None, {}, {"prompt_tokens": 7}, {"prompt_tokens": 1e300, "completion_tokens": 3},
                                   {"prompt_tokens": -5, "completion_tokens": 3}, {"prompt_tokens": "12"}])
def test_missing_or_insane_usage_is_counted_by_the_gateway(usage: Any) -> None:
    out = usage_outcome(usage, "completion_tokens", lambda: 11)
    assert (out.prompt_tokens, out.completion_tokens, out.usage_source) == (None, 11, "counted")


def test_the_parsed_request_of_a_chat_stream() -> None:
    body = {"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "stream_options": {"include_usage": True}}
    headers = {"x-team-tier": "gold", "x-request-id": "mine", "authorization": "Bearer k", "content-length": "90"}
    req = parse_request(CHAT, body, parse_body(ChatCompletionRequest, body), headers)
    assert (req.alias, req.stream, req.client_wants_usage, req.off_loop) == ("fast", True, True, False)
    assert req.headers == {"x-team-tier": "gold"} and req.routed is body


def test_embeddings_never_stream_and_route_their_input_as_the_prompt() -> None:
    body = {"model": "emb", "input": "some text", "stream": True}
    req = parse_request(EMBEDDINGS, body, parse_body(EmbeddingRequest, body), {})
    assert not req.stream and req.routed == {"model": "emb", "prompt": "some text"} and req.off_loop


def test_stage_values_are_frozen() -> None:
    req = ParsedRequest("fast", False, False, {}, {}, {}, False)
    plan = RoutePlan(facts=None, decision=RouteDecision((Target("b", "m"),), "r1", "why"), policy=None)  # type: ignore[arg-type]
    for value, name in ((req, "stream"), (plan, "decision"), (UsageOutcome(1, 2, "upstream"), "completion_tokens"),
                        (OK, "status")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, name, None)


def test_the_exchange_reads_its_stages() -> None:
    ex = Exchange.begin("chat", None)
    assert (ex.stream, ex.facts, ex.decision, ex.team, ex.ending) == (False, None, None, "", OK)
    ex.request = ParsedRequest("fast", True, False, {}, {}, {}, False)
    ex.route = RoutePlan(facts=None, decision=RouteDecision((), "too-big", "no engine holds it",  # type: ignore[arg-type]
                                                            refusal="too_large"), policy=None)
    ex.fail("rejected", 400, "invalid_request_error", "too large")
    assert ex.stream and ex.response_headers()["x-hybridgw-route-rule"] == "too-big"
    assert ex.ending == Ending("rejected", 400, "invalid_request_error", "too large") and OK.status == "ok"
