"""Embedded budgets survive a restart: without Redis, a gateway restarted on the same data dir still
refuses a team whose day budget the ledger says is spent; and /v1/usage names the hosted price its
all-hosted comparison used (the fake upstream and `hybridgw serve`)."""
from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.gateway.conftest import create_key
from tests.support import procs
from tests.support.policy_text import fake_backend

BUDGET_USD = 0.05  # priced at $1000/$2000 per Mtok, one short request costs about a cent
MAX_REQUESTS = 40  # a bound on spending it: the loop below must end in a refusal long before this


def _policy(fake: str) -> str:
    return "\nversion: 1\nbackends:\n" + fake_backend("hosted", fake, (1000, 2000)) + f"""\
models:
  m: {{deployments: [{{backend: hosted, model: m}}]}}
teams:
  broke: {{budget: {{usd_per_day: {BUDGET_USD}, on_exceed: reject}}}}
  priced: {{}}
"""


@pytest.fixture(scope="module")
def served(fake_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Served]:
    """One gateway for both tests (each its own team): the restart test restarts it on its data dir."""
    config = tmp_path_factory.mktemp("budget") / "policy.yaml"
    config.write_text(_policy(fake_upstream))
    data_dir = config.parent / "data"
    with procs.served(config, {"HYBRIDGW_DATA_DIR": str(data_dir)}, name="gateway-budget", data_dir=data_dir,
                      redis_url="") as gateway:
        yield gateway


def _key(served: procs.Served, team: str) -> str:
    assert served.data_dir is not None
    return create_key(served.data_dir, team, served.data_dir.parent / "policy.yaml")


def _chat(served: procs.Served, key: str) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hello"}]},
                      timeout=30)


def test_a_spent_day_budget_is_still_spent_after_a_restart(served: procs.Served) -> None:
    key = _key(served, "broke")
    statuses = []
    while 429 not in statuses:
        assert len(statuses) < MAX_REQUESTS, statuses
        statuses.append(_chat(served, key).status_code)
    assert statuses.count(200) >= 2 and set(statuses) == {200, 429}, statuses
    assert served.restart() == 0, served.log()[-3000:]  # SIGTERM: the ledger flushes
    refused = _chat(served, key)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error" and "USD/day" in error["message"], error


def test_usage_names_the_hosted_price_of_each_alias(served: procs.Served) -> None:
    key = _key(served, "priced")
    assert _chat(served, key).status_code == 200

    def usage() -> dict[str, object]:
        body = httpx.get(f"{served.url}/v1/usage", params={"since": "1d"},
                         headers={"authorization": f"Bearer {key}"}, timeout=30).json()
        return dict(body) if body.get("requests") else {}

    body = procs.wait_until(usage, "the request in /v1/usage")
    assert body["hosted_prices"] == {"m": "hosted/m $1000 in, $2000 out per Mtok (policy)"}
