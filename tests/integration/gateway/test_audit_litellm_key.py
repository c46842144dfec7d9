"""Audit: an upstream that echoes the credentials it refused must not show the provider's key to the tenant
through the litellm backend either (its exception text carries the upstream's message)."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.gateway.conftest import create_key
from tests.support import procs

PROVIDER_KEY = "litellm-provider-key-audit"


@pytest.fixture(scope="module")
def litellm_gateway(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root = tmp_path_factory.mktemp("audit-litellm")
    config = root / "policy.yaml"
    config.write_text(f"""
backends:
  lit: {{kind: litellm, model: openai, base_url: "{fake_upstream}/v1", api_key: {PROVIDER_KEY}}}
models:
  m: {{deployments: [{{backend: lit, model: "m;status=401;echo_key=1"}}]}}
teams: {{red: {{}}}}
""")
    key = create_key(root / "data", "red", config)
    with procs.served(config, {"HYBRIDGW_DATA_DIR": str(root / "data")}, name="gateway-audit-litellm") as gw:
        yield gw.url, key


@pytest.mark.parametrize("stream", [False, True])
def test_the_litellm_backend_redacts_an_echoed_provider_key(litellm_gateway: tuple[str, str], stream: bool) -> None:
    url, key = litellm_gateway
    response = httpx.post(f"{url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream},
                          timeout=60)
    assert response.status_code == 502, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert PROVIDER_KEY not in response.text and "[redacted]" in response.text
