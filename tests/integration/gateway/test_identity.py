"""Keys, teams, request ids and the models list, through the SDK and the keys CLI."""
from __future__ import annotations

import sqlite3
import subprocess
from contextlib import closing

import httpx
import openai
import pytest

from gateway.auth import hash_key
from tests.integration.gateway.conftest import ADMIN_KEY, Gateway, create_key, hybridgw
from tests.support.procs import wait_until

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer sk-hgw-wrong", "Basic abc", "sk-hgw-no-scheme"])
def test_missing_or_unknown_key_is_401(gateway: Gateway, header: str | None) -> None:
    headers = {} if header is None else {"authorization": header}
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/v1/embeddings")):
        response = httpx.request(method, f"{gateway.url}{path}", headers=headers,
                                 json={"model": "m", "messages": MESSAGES})
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "authentication_error"


def test_wrong_key_with_the_sdk(gateway: Gateway) -> None:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-hgw-nope", max_retries=0) as client:
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="m", messages=MESSAGES)


def test_models_list_is_per_team(gateway: Gateway) -> None:
    with gateway.client("red") as red, gateway.client("blue") as blue:
        red_models = {m.id for m in red.models.list()}
        blue_models = {m.id for m in blue.models.list()}
        assert "m" in red_models and "secret" not in red_models
        assert "secret" in blue_models
        assert "gone" not in blue_models  # its backend is absent
        assert blue.models.retrieve("secret").id == "secret"
        with pytest.raises(openai.NotFoundError):
            red.models.retrieve("secret")
        with pytest.raises(openai.NotFoundError) as info:  # not even that it exists
            red.chat.completions.create(model="secret", messages=MESSAGES)
        assert info.value.param == "model"
        assert blue.chat.completions.create(model="secret", messages=MESSAGES).choices


def test_request_id_from_client_is_echoed_and_kept_beside_the_gateways(gateway: Gateway) -> None:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES},
                          headers={**gateway.auth(), "x-request-id": "my-trace-123"})
    assert response.headers["x-request-id"] == "my-trace-123"
    own = response.headers["x-hybridgw-request-id"]
    assert own.startswith("req_")
    # Upstreams (a shared engine too) see the gateway's unique id, never a client-chosen one.
    assert gateway.last_upstream_request()["headers"]["x-request-id"] == own
    record = gateway.record_for("my-trace-123")
    assert (record["status"], record["request_id"], record["client_request_id"]) == ("ok", own, "my-trace-123")


def test_request_ids_are_generated_and_unique(gateway: Gateway) -> None:
    ids = set()
    for _ in range(5):
        response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m", "messages": []},
                              headers=gateway.auth())
        assert response.status_code == 400
        ids.add(response.headers["x-request-id"])
    assert len(ids) == 5
    # Rejected requests are recorded too, charged to the caller's team.
    record = gateway.record_for(ids.pop())
    assert (record["status"], record["http_status"], record["team"]) == ("rejected", 400, "red")


def test_keys_cli_create_list_revoke(gateway: Gateway) -> None:
    assert gateway.config is not None
    key = create_key(gateway.data_dir, "green", gateway.config)
    assert key.startswith("sk-hgw-")
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0) as client:
        assert client.chat.completions.create(model="m", messages=MESSAGES).choices
        listing = subprocess.run(hybridgw("keys", "--data-dir", str(gateway.data_dir), "list"),
                                 capture_output=True, text=True, check=True).stdout
        key_id = key.split("-")[2]
        assert key_id in listing and "green" in listing and key not in listing
        subprocess.run(hybridgw("keys", "--data-dir", str(gateway.data_dir), "revoke", key_id), check=True,
                       capture_output=True)

        def refused() -> bool:
            try:
                client.chat.completions.create(model="m", messages=MESSAGES)
            except openai.AuthenticationError:
                return True
            return False

        # The gateway remembers a key for its cache's TTL (~1 s, docs/security.md): refused within it.
        wait_until(refused, "the revoked key to be refused")
    # Only the hash is stored: read through a connection (the row may still sit in the WAL file).
    with closing(sqlite3.connect(gateway.data_dir / "keys.sqlite3")) as conn:
        stored = "\n".join(conn.iterdump())
    assert hash_key(key) in stored and key not in stored


def test_admin_endpoints_need_the_admin_key(gateway: Gateway) -> None:
    url = f"{gateway.url}/admin/keys"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers=gateway.auth("red")).status_code == 403  # a team's key: known, not admin
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    created = httpx.post(url, json={"team": "purple"}, headers=admin)
    assert created.status_code == 201
    key, key_id = created.json()["key"], created.json()["key_id"]
    assert any(row["key_id"] == key_id for row in httpx.get(url, headers=admin).json()["data"])
    ok = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES},
                    headers={"authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    assert httpx.delete(f"{url}/{key_id}", headers=admin).status_code == 200
    assert httpx.delete(f"{url}/{key_id}", headers=admin).status_code == 404
    gone = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES},
                      headers={"authorization": f"Bearer {key}"})
    assert gone.status_code == 401
    bad = httpx.post(url, json={"name": "no team"}, headers=admin)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "team"


def test_health_and_readiness(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{gateway.url}/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and "fake" in body["backends"]
    assert body["backends"]["fake"]["requests"] > 0
