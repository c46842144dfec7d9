"""Keys shared by replicas through Redis (REDIS_URL): a key made with `hybridgw keys` or the admin
API of one replica works on the other; revoked anywhere, it is refused by every replica within the
key cache's bound (5 s; waited on, never timed). The CLI refuses teams the policy does not name."""
from __future__ import annotations

import subprocess
from typing import Any

import httpx

from gateway.assembly import REDIS_KEY_CACHE_S
from tests.integration.accounting.conftest import ADMIN_KEY, CLIENT_TIMEOUT_S, Stack, hybridgw, wait_until

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
BOUND_S = REDIS_KEY_CACHE_S + 25  # the cache's TTL, plus room for a slow shared machine


def _keys(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`hybridgw keys` as an operator runs it beside the replicas: REDIS_URL set, the same policy."""
    return subprocess.run(hybridgw("keys", "--data-dir", str(stack.root / "cli"), "--config",
                                   str(stack.root / "policy.yaml"), *args),
                          capture_output=True, text=True, timeout=60, env=stack.env, check=False)


def _models_status(stack: Stack, gateway: int, key: str) -> int:
    return httpx.get(f"{stack.gateways[gateway].url}/v1/models", headers={"authorization": f"Bearer {key}"},
                     timeout=CLIENT_TIMEOUT_S).status_code


def _statuses(stack: Stack, key: str) -> list[int]:
    return [_models_status(stack, i, key) for i in range(len(stack.gateways))]


def _chat(stack: Stack, gateway: int, key: str) -> dict[str, Any]:
    response = httpx.post(f"{stack.gateways[gateway].url}/v1/chat/completions",
                          json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                          headers={"authorization": f"Bearer {key}"}, timeout=CLIENT_TIMEOUT_S)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_cli_key_works_on_every_replica_until_revoked(stack: Stack) -> None:
    made = _keys(stack, "create", "--team", "shared", "--name", "cli")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = key.split("-")[2]
    assert _statuses(stack, key) == [200, 200]
    _chat(stack, 1, key)
    listing = _keys(stack, "list").stdout
    assert key_id in listing and "shared" in listing and key not in listing
    admin_rows = httpx.get(f"{stack.gateways[1].url}/admin/keys", headers=ADMIN, timeout=CLIENT_TIMEOUT_S).json()
    assert any(row["key_id"] == key_id and row["team"] == "shared" for row in admin_rows["data"])
    revoked = _keys(stack, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    wait_until(lambda: _statuses(stack, key) == [401, 401], "both replicas to refuse the revoked key", BOUND_S)
    assert _keys(stack, "revoke", key_id).returncode == 1  # already revoked


def test_an_admin_api_key_made_on_one_replica_is_revoked_from_the_other(stack: Stack) -> None:
    created = httpx.post(f"{stack.gateways[0].url}/admin/keys", json={"team": "shared", "name": "api"},
                         headers=ADMIN, timeout=CLIENT_TIMEOUT_S)
    assert created.status_code == 201, created.text
    key, key_id = created.json()["key"], created.json()["key_id"]
    assert _statuses(stack, key) == [200, 200]
    gone = httpx.delete(f"{stack.gateways[1].url}/admin/keys/{key_id}", headers=ADMIN, timeout=CLIENT_TIMEOUT_S)
    assert gone.status_code == 200
    assert _models_status(stack, 1, key) == 401  # the replica that revoked it forgets it at once
    wait_until(lambda: _models_status(stack, 0, key) == 401, "the other replica to refuse it", BOUND_S)


def test_the_cli_refuses_a_team_the_policy_does_not_name(stack: Stack) -> None:
    run = _keys(stack, "create", "--team", "sharred")
    assert run.returncode == 2 and run.stdout == ""
    assert "'sharred' is not in the policy" in run.stderr
    assert "sharred" not in _keys(stack, "list", "--all").stdout
