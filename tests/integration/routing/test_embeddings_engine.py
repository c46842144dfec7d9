"""Embeddings: our engine serves none, so the router passes it over up front (as for JSON output) and a
hosted target of the alias serves them; an alias only our engine serves answers a 400 naming `model`
(code embeddings_unsupported), never the engine's 404 passed on as upstream_404."""
from __future__ import annotations

from typing import Any

import openai

from tests.integration.routing.conftest import Gateway, Routed, _routed


def _embed(gw: Gateway, model: str, **kw: Any) -> Routed:
    with gw.client() as client:
        try:
            raw = client.embeddings.with_raw_response.create(model=model, input="hello there", **kw)
        except openai.APIStatusError as exc:
            return _routed(exc.status_code, exc.response.headers, exc.body)
        return _routed(raw.status_code, raw.headers, raw.parse())


def test_embeddings_pass_over_the_engine_to_hosted(roomy: Gateway) -> None:
    for _ in range(2):
        r = _embed(roomy, "chat")
        assert (r.status, r.backend) == (200, "hosted"), r
        assert r.body.data and r.body.data[0].embedding
        record = roomy.record_for(r.request_id)
        assert "skipped" not in record  # the engine was not tried
        assert record.get("structured_output", "") == ""  # embeddings ask for no constrained output
    assert roomy.chat("chat").backend == "local"  # chat still goes to the engine while it fits


def test_embeddings_of_an_engine_only_alias_are_a_400(roomy: Gateway) -> None:
    for _ in range(4):  # more than health.failure_threshold (3): none of them reaches the engine
        r = _embed(roomy, "private")
        assert r.status == 400, r
        assert r.body["code"] == "embeddings_unsupported" and r.body["param"] == "model", r.body
        assert "local" in r.body["message"], r.body
    assert roomy.chat("private").status == 200  # its circuit closed
