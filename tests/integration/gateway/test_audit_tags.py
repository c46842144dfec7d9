"""Audit: a request's `metadata` may add routing tags, never change the ones the policy gives its team. A
team tagged `tier: free` that sent `metadata: {"tier": "premium"}` was routed by the premium rule."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway.conftest import create_key
from tests.support import procs

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def tagged(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    root: Path = tmp_path_factory.mktemp("audit-tags")
    config = root / "policy.yaml"
    config.write_text(f"""
backends:
  premium: {{kind: openai, base_url: "{fake_upstream}/v1"}}
  cheap: {{kind: openai, base_url: "{fake_upstream}/v1"}}
models:
  m: {{deployments: [{{backend: cheap, model: m}}, {{backend: premium, model: m}}]}}
teams:
  red: {{tags: {{tier: free}}}}
rules:
  - name: premium-tier
    when: {{tags: {{tier: premium}}}}
    route: [premium]
  - name: nightly-jobs
    when: {{tags: {{job: nightly}}}}
    route: [cheap]
  - name: rest
    route: [cheap]
""")
    key = create_key(root / "data", "red", config)
    with procs.served(config, {"HYBRIDGW_DATA_DIR": str(root / "data")}, name="gateway-audit-tags") as gateway:
        yield gateway.url, key


def routed(tagged: tuple[str, str], metadata: dict[str, str]) -> httpx.Response:
    url, key = tagged
    response = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES, "metadata": metadata},
                          headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response


def test_metadata_cannot_override_the_teams_policy_tags(tagged: tuple[str, str]) -> None:
    response = routed(tagged, {"tier": "premium"})
    assert response.headers["x-hybridgw-route-rule"] == "rest"
    assert response.headers["x-hybridgw-backend"] == "cheap"


def test_metadata_still_adds_tags_of_its_own(tagged: tuple[str, str]) -> None:
    assert routed(tagged, {"job": "nightly"}).headers["x-hybridgw-route-rule"] == "nightly-jobs"
