"""A virtual key's own hard USD budget (`on_exceed: reject`) under a team whose budget re-routes
(`on_exceed: route`): once the team is over budget its requests go to the over-budget route, and
the key's budget still refuses them (429) once spent, and still cuts a stream it cannot pay for.
The over-budget route is priced here, so the key's spend keeps growing there."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.support import procs

ADMIN_KEY = "sk-admin-key-budget-scopes-0123"
KEY_USD_PER_DAY = 0.05  # a handful of requests at $1000/$2000 per Mtok


def _policy(fake: str) -> str:
    return f"""
backends:
  up: {{kind: openai, base_url: "{fake}/v1", api_key: k, price: {{input_usd_per_mtok: 1000, output_usd_per_mtok: 2000}}}}
  mid: {{kind: openai, base_url: "{fake}/v1", api_key: k, price: {{input_usd_per_mtok: 1000, output_usd_per_mtok: 2000}}}}
models:
  m: {{deployments: [{{backend: up, model: m}}, {{backend: mid, model: m}}]}}
rules:
  - {{name: over-budget-mid, when: {{over_budget: true}}, route: [mid]}}
  - {{name: hosted, route: [up]}}
teams:
  lean:
    budget: {{usd_per_day: 0.000001, on_exceed: route}}
    default_output_tokens: 1
"""


@dataclass
class Served:
    url: str

    def key(self, name: str) -> str:
        made = httpx.post(f"{self.url}/admin/keys", headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30,
                          json={"team": "lean", "name": name,
                                "budget": {"usd_per_day": KEY_USD_PER_DAY, "on_exceed": "reject"}})
        assert made.status_code == 201, made.text
        return str(made.json()["key"])

    def chat(self, key: str, **extra: Any) -> httpx.Response:
        return httpx.post(f"{self.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}, timeout=30)


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("key-budget-scopes")
    config = root / "policy.yaml"
    config.write_text(_policy(fake_upstream))
    env = {"HYBRIDGW_DATA_DIR": str(root / "data"), "HYBRIDGW_ADMIN_KEY": ADMIN_KEY}
    with procs.gateway(config, env, "gateway-key-budget-scopes") as (url, _):
        yield Served(url)


def test_a_keys_hard_budget_still_refuses_when_its_team_is_rerouted(served: Served) -> None:
    key = served.key("hard")
    replies = []
    for _ in range(40):  # ~$0.01 a request: the key's $0.05 is spent long before
        replies.append(served.chat(key))
        if replies[-1].status_code != 200:
            break
    served_ok, refused = replies[:-1], replies[-1]
    assert refused.status_code == 429, [r.status_code for r in replies]
    error = refused.json()["error"]
    assert error["code"] == "usd_per_day" and error["message"].startswith("key "), error
    assert served_ok and {r.headers["x-hybridgw-backend"] for r in served_ok} == {"mid"}  # the team's route
    assert all(float(r.headers["x-hybridgw-budget-remaining-usd"]) <= KEY_USD_PER_DAY for r in served_ok)


def test_a_stream_the_keys_hard_budget_cannot_pay_for_is_cut(served: Served) -> None:
    """The team expects 1 output token, so only the stream's own count against the key's budget
    (not the team's, which is re-routed and unchecked) can stop the 200-chunk reply."""
    client = openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.key("streamer"), max_retries=0)
    received, error = 0, None
    try:
        for chunk in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "all"}],
                                                    stream=True, user="fake:chunks=200"):
            received += sum(1 for c in chunk.choices if c.delta.content)
    except openai.APIError as exc:
        error = exc
    assert error is not None and "budget" in str(error), (received, error)
    assert 0 < received < 200
