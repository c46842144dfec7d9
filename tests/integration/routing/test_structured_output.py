"""A request for JSON output (response_format json_object / json_schema) that a route sends to our engine:
the engine refuses it (it cannot constrain its output) instead of answering free text, and the gateway
takes that refusal as "try the next target" — the hosted spill serves it — without counting it against
the engine's health; a local-only alias answers the engine's 400 naming the field."""
from __future__ import annotations

from tests.integration.routing.conftest import MESSAGES, Gateway

JSON = {"type": "json_object"}


def test_json_output_spills_to_hosted_and_the_engine_stays_healthy(hybrid: Gateway) -> None:
    for _ in range(4):  # more than health.failure_threshold (3): the circuit would open if they counted
        r = hybrid.chat("chat", response_format=JSON)
        assert (r.status, r.backend) == (200, "hosted"), r
        skipped = hybrid.record_for(r.request_id)["skipped"]
        assert [s["backend"] for s in skipped] == ["local"] and "response_format" in skipped[0]["error"]
    with hybrid.client() as client:  # a stream too: the engine refuses before its first byte
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, max_tokens=4,
                                                               stream=True, response_format=JSON)
        assert raw.headers["x-hybridgw-backend"] == "hosted"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    plain = hybrid.chat("chat", response_format={"type": "text"})
    assert (plain.status, plain.backend) == (200, "local")  # text is what the engine does anyway
    assert hybrid.chat("tiny").status == 200  # local-only: still served, its circuit closed


def test_json_output_on_a_local_only_alias_is_a_400_naming_the_field(hybrid: Gateway) -> None:
    r = hybrid.chat("tiny", response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {}}})
    assert r.status == 400, r
    assert r.body["param"] == "response_format" and r.body["code"] == "structured_output_unsupported"
