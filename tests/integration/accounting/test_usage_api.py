"""GET /v1/usage through the gateways: a team's key sees only its own team, the admin key every
team, no key is a 401; keys the policy lists by hash authenticate as their team on every replica
(and a hash added to the running policy file works without a restart)."""
from __future__ import annotations

import asyncio
import hashlib
import json
from functools import partial
from typing import Any

import httpx
import pytest

from tests.integration.accounting.conftest import (
    ADMIN_KEY,
    Stack,
    in_one_minute,
    key_hash,
    team_key,
    wait_until,
)
from tests.integration.accounting.traffic import Seen, burst, chat

FIELDS = ("requests", "prompt_tokens", "completion_tokens")


def _totals(body: dict[str, Any]) -> dict[str, int]:
    return {k: int(body[k]) for k in FIELDS}


def _access_record(stack: Stack, request_id: str | None) -> dict[str, Any] | None:
    for gateway in stack.gateways:
        for line in gateway.log().splitlines():
            if line.startswith("{") and f'"request_id":"{request_id}"' in line:
                return dict(json.loads(line))
    return None


@pytest.fixture(scope="module")
def hashed_traffic(stack: Stack) -> Seen:
    """Team `hashed` through both replicas with the one key its policy entry lists by hash."""
    async def run() -> Seen:
        async with stack.clients("hashed") as clients:
            return await burst(clients, 8, concurrency=4)

    seen = asyncio.run(run())
    assert seen.statuses() == {200: 8}
    want = seen.totals()
    wait_until(lambda: _totals(stack.team_usage("hashed")) == want, "team hashed's usage to settle")
    return seen


def test_a_policy_key_hash_authenticates_as_its_team_on_both_replicas(stack: Stack, hashed_traffic: Seen) -> None:
    digest = hashlib.sha256(stack.keys["hashed"].encode()).hexdigest()
    served_by = set()
    for outcome in hashed_traffic.outcomes:
        rid = outcome.request_id
        assert rid is not None
        record = wait_until(partial(_access_record, stack, rid), f"the record of {rid}")
        assert record["team"] == "hashed" and record["key_id"] == f"policy:{digest[:8]}"
        served_by.add(next(g.name for g in stack.gateways if rid in g.log()))
    assert served_by == {"a", "b"}
    body = stack.usage(stack.keys["hashed"], 1).json()  # the key reads its own team, on either replica
    assert body["team"] == "hashed" and _totals(body) == hashed_traffic.totals()


def test_a_team_key_sees_only_its_own_team(stack: Stack, hashed_traffic: Seen) -> None:
    key = stack.keys["hashed"]
    own = stack.usage(key, since="1d")
    assert own.status_code == 200
    assert own.json()["team"] == "hashed" and "teams" not in own.json()
    assert _totals(stack.usage(key, team="hashed").json()) == hashed_traffic.totals()
    for gateway in (0, 1):
        other = stack.usage(key, gateway, team="red")
        assert other.status_code == 403
        assert other.json()["error"] == {"message": "this key may only read its own team's usage",
                                         "type": "permission_error", "param": "team",
                                         "code": "insufficient_permissions"}


def test_the_admin_key_sees_every_team(stack: Stack, hashed_traffic: Seen) -> None:
    everyone = stack.usage(ADMIN_KEY, since="1d").json()
    assert everyone["team"] == "*"
    teams = {t["team"]: t for t in everyone["teams"]}
    assert _totals(teams["hashed"]) == hashed_traffic.totals()
    assert everyone["requests"] == sum(t["requests"] for t in everyone["teams"])
    assert _totals(stack.usage(ADMIN_KEY, 1, team="hashed").json()) == hashed_traffic.totals()


@pytest.mark.parametrize("headers", [None, "Bearer sk-acct-nobody", "Basic abc"])
def test_no_or_unknown_key_is_an_openai_shaped_401(stack: Stack, headers: str | None) -> None:
    sent = {"authorization": headers} if headers else {}
    response = httpx.get(f"{stack.gateways[0].url}/v1/usage", headers=sent, timeout=30)
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "authentication_error"
    assert "sk-acct-nobody" not in error["message"]  # a key is never echoed whole


def test_bad_query_is_a_400_naming_the_parameter(stack: Stack) -> None:
    response = stack.usage(stack.keys["hashed"], since="forever")
    assert response.status_code == 400 and response.json()["error"]["param"] == "since"


def _status_with(url: str, key: str) -> int:
    return httpx.get(f"{url}/v1/usage", headers={"authorization": f"Bearer {key}"}, timeout=30).status_code


def test_a_key_hash_and_a_limit_added_to_the_running_policy_apply_without_a_restart(stack: Stack) -> None:
    new_key = team_key("hashed")
    config = stack.root / "policy.yaml"
    old_entry = json.dumps([key_hash(stack.keys["hashed"])]) + "}"
    text = config.read_text()
    assert old_entry in text
    assert {_status_with(g.url, new_key) for g in stack.gateways} == {401}
    new_entry = json.dumps([key_hash(stack.keys["hashed"]), key_hash(new_key)]) + ", limits: {requests_per_minute: 2}}"
    config.write_text(text.replace(old_entry, new_entry))
    wait_until(lambda: all(_status_with(g.url, new_key) == 200 for g in stack.gateways),
               "both replicas to reload the policy with the new key hash")
    assert stack.usage(new_key).json()["team"] == "hashed"
    assert stack.usage(stack.keys["hashed"]).status_code == 200  # the old key still works

    async def three() -> list[int]:  # the new limit holds across both replicas
        async with stack.clients("hashed") as clients:
            return [(await chat(clients[i % 2], i, stream=False)).status for i in range(3)]

    assert in_one_minute(three, longest_s=5.0) == [200, 200, 429]  # 3 requests: 0.4 s at a load of 10
