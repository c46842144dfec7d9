"""GET /metrics names teams and their costs: it needs the admin key as the bearer token (what a
Prometheus scrape config's `authorization` sends); a team key or none gets an OpenAI-shaped 401."""
from __future__ import annotations

import httpx

from gateway.settings import Settings
from tests.integration.gateway.conftest import ADMIN_KEY, Gateway
from tests.support.procs import wait_until


def test_metrics_need_the_admin_key(gateway: Gateway) -> None:
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        assert http.post("/v1/chat/completions", headers=gateway.auth("red"),
                         json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}).status_code == 200
        for headers in ({}, gateway.auth("red"), {"authorization": "Bearer not-the-admin-key"}):
            refused = http.get("/metrics", headers=headers)
            assert refused.status_code == 401
            error = refused.json()["error"]
            assert error["type"] == "authentication_error" and "HYBRIDGW_ADMIN_KEY" in error["message"]
            assert "hybridgw_team" not in refused.text
        admin = {"authorization": f"Bearer {ADMIN_KEY}"}

        def scraped() -> str | None:
            response = http.get("/metrics", headers=admin)
            return response.text if response.status_code == 200 and 'hybridgw_team="red"' in response.text else None

        text = wait_until(scraped, "red's counters in the admin's scrape")
        assert "gen_ai_server_request_duration" in text


def test_metrics_public_is_an_explicit_setting() -> None:
    assert Settings.from_env({}).metrics_public is False
    assert Settings.from_env({"HYBRIDGW_METRICS_PUBLIC": "1"}).metrics_public is True
