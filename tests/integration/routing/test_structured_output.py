"""A request for JSON output (response_format json_object / json_schema): the router passes over our
engine (it cannot constrain its output) and sends it straight to the hosted spill, no round trip to an
engine that would refuse it; where the engine is the only target it still gets it and refuses with a
400 naming the field (never free text), which does not count against its health."""
from __future__ import annotations

from tests.integration.routing.conftest import MESSAGES, Gateway

JSON = {"type": "json_object"}


def test_json_output_goes_straight_to_hosted(hybrid: Gateway) -> None:
    for _ in range(2):
        r = hybrid.chat("chat", response_format=JSON)
        assert (r.status, r.backend) == (200, "hosted"), r
        record = hybrid.record_for(r.request_id)
        assert "skipped" not in record  # the engine was not tried (it was: refused)
        assert record["structured_output"] == "response_format"  # kept for `hybridgw replay`, which routes it so too
    with hybrid.client() as client:  # a stream too
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES, max_tokens=4,
                                                               stream=True, response_format=JSON)
        assert raw.headers["x-hybridgw-backend"] == "hosted"
        assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    plain = hybrid.chat("chat", response_format={"type": "text"})
    assert (plain.status, plain.backend) == (200, "local")  # text is what the engine does anyway
    assert hybrid.record_for(plain.request_id)["structured_output"] == ""


def test_json_output_on_a_local_only_alias_is_a_400_naming_the_field(hybrid: Gateway) -> None:
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": {}}}
    for _ in range(4):  # more than health.failure_threshold (3): the circuit would open if they counted
        r = hybrid.chat("tiny", response_format=schema)
        assert r.status == 400, r
        assert r.body["param"] == "response_format" and r.body["code"] == "structured_output_unsupported"
    assert hybrid.chat("tiny").status == 200  # still served, its circuit closed


def test_guided_json_on_a_local_only_alias_is_a_400_not_free_text(hybrid: Gateway) -> None:
    r = hybrid.chat("tiny", extra_body={"guided_json": {"type": "object"}})
    assert r.status == 400, r
    assert r.body["param"] == "guided_json" and r.body["code"] == "structured_output_unsupported"
