"""Model names a client makes up never become metric labels or report fields: a refused request
is labelled `unknown` (its raw name stays in its own record), so real models keep their labels."""
from __future__ import annotations

import httpx

from tests.integration.gateway.conftest import ADMIN_KEY, Gateway
from tests.support.procs import wait_until

BOGUS = 60  # more than the metrics' label cap (50): on the old code real models then became "other"


def test_unknown_model_names_are_not_labels_or_report_keys(gateway: Gateway) -> None:
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        for i in range(BOGUS):
            response = http.post("/v1/chat/completions", headers={**gateway.auth("blue"), "x-request-id": f"bogus-{i}"},
                                 json={"model": f"bogus-model-{i}", "messages": [{"role": "user", "content": "hi"}]})
            assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
            assert "bogus-model-" in response.json()["error"]["message"]  # the client still sees its name
        ok = http.post("/v1/chat/completions", headers=gateway.auth("blue"),
                       json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        assert ok.status_code == 200

        def scraped() -> str | None:
            text = http.get("/metrics", headers=admin).text
            return text if 'gen_ai_request_model="m"' in text and 'gen_ai_request_model="unknown"' in text else None

        text = wait_until(scraped, "the real model and `unknown` as metric labels")
        assert "bogus-model" not in text

        def reported() -> set[str] | None:
            report = http.get("/v1/usage", params={"team": "blue", "since": "1d"}, headers=admin).json()
            models = {line["model"] for line in report["models"]}
            return models if {"m", "unknown"} <= models else None

        models = wait_until(reported, "blue's report to show the real model and `unknown`")
        assert not any(name.startswith("bogus-model") for name in models), models
    record = gateway.record_for("bogus-7")
    assert record["model_alias"] == "unknown" and record["tags"]["requested_model"] == "bogus-model-7"
