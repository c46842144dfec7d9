"""Usage records are keyed by the gateway's own request id: a client's x-request-id, repeated or
shared with another team, never merges or erases records, and a non-ASCII one is ignored."""
from __future__ import annotations

import time
import uuid

import httpx

from observability.sqlite_store import SqliteStore
from observability.stores import SQLITE_FILENAME
from tests.integration.gateway.conftest import Gateway
from tests.support.procs import wait_until

MESSAGES = [{"role": "user", "content": "hi"}]


def _chat(gateway: Gateway, team: str, request_id: str | bytes) -> httpx.Response:
    response = httpx.post(f"{gateway.url}/v1/chat/completions", json={"model": "m", "messages": MESSAGES},
                          headers={**gateway.auth(team), "x-request-id": request_id}, timeout=30)
    assert response.status_code == 200, response.text
    return response


def test_one_client_id_from_two_teams_leaves_three_records(gateway: Gateway) -> None:
    shared = f"dup-{uuid.uuid4().hex[:8]}"
    responses = [_chat(gateway, team, shared) for team in ("red", "red", "blue")]
    assert [r.headers["x-request-id"] for r in responses] == [shared] * 3  # echoed to the client
    own_ids = [r.headers["x-hybridgw-request-id"] for r in responses]
    assert len(set(own_ids)) == 3
    store = SqliteStore(gateway.data_dir / SQLITE_FILENAME)  # what the ledger wrote, read as the report does
    try:
        def stored() -> list[tuple[str, str]]:
            found = store.records(None, time.time() - 3600, time.time() + 60)
            return sorted((r.team, r.request_id) for r in found if r.client_request_id == shared)

        rows = wait_until(lambda: len(found := stored()) == 3 and found, "three records in the ledger")
        assert {request_id for _, request_id in rows} == set(own_ids)
        mine = {team: [r for r in store.records(team, time.time() - 3600, time.time() + 60)
                       if r.client_request_id == shared] for team in ("red", "blue")}
        assert (len(mine["red"]), len(mine["blue"])) == (2, 1)
    finally:
        store.close()


def test_a_non_ascii_request_id_is_ignored_not_a_500(gateway: Gateway) -> None:
    response = _chat(gateway, "red", "trace-é-😀".encode())
    own = response.headers["x-hybridgw-request-id"]
    assert response.headers["x-request-id"] == own  # nothing to echo: the client gets ours
    assert gateway.last_upstream_request()["headers"]["x-request-id"] == own
    record = gateway.record_for(own)
    assert (record["status"], record["client_request_id"]) == ("ok", "")
