"""A request that asks for a tool call, routed to our engine (which cannot answer with one): where the route
has another target the router passes over the engine up front (policies/structured_output.py), as for JSON
output, and the gateway would still try the next target on the engine's refusal (its code is one
ANOTHER_TARGET_MAY); where the engine is the only target the client gets the engine's 400 naming tool_choice — never plain text with 200,
which both were before. The refusals do not count against the engine's health."""
from __future__ import annotations

from tests.integration.routing.conftest import Fake, Gateway

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "d",
                                           "parameters": {"type": "object", "properties": {}}}}]
NAMED = {"type": "function", "function": {"name": "lookup"}}


def test_a_tool_call_request_goes_on_to_the_hosted_target(hybrid: Gateway, fake: Fake) -> None:
    for choice in ("required", NAMED, "auto"):
        r = hybrid.chat("chat", tools=TOOLS, tool_choice=choice)
        assert (r.status, r.backend) == (200, "hosted"), r
        assert fake.last_request()["body"]["tool_choice"] == choice
        record = hybrid.record_for(r.request_id)
        assert "skipped" not in record and record["structured_output"] == "tool_choice", record  # engine not tried
    with hybrid.client() as client:  # a stream too
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=[{"role": "user", "content": "x"}],
                                                               max_tokens=4, stream=True, tools=TOOLS)
        assert raw.headers["x-hybridgw-backend"] == "hosted"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    none = hybrid.chat("chat", tools=TOOLS, tool_choice="none")
    assert (none.status, none.backend) == (200, "local"), none  # a text answer: the engine serves it


def test_a_tool_call_request_on_a_local_only_alias_is_the_engines_400(hybrid: Gateway) -> None:
    for kw in ({"tool_choice": "required"}, {"tool_choice": NAMED}, {}):
        for _ in range(2):  # 6 in all, over health.failure_threshold (3): the circuit would open if they counted
            r = hybrid.chat("tiny", tools=TOOLS, **kw)
            assert r.status == 400, r
            assert r.body["param"] == "tool_choice" and r.body["code"] == "structured_output_unsupported", r
            assert "tool call" in r.body["message"], r
    assert hybrid.chat("tiny").status == 200  # still served, its circuit closed
    assert hybrid.chat("tiny", tools=TOOLS, tool_choice="none").status == 200
