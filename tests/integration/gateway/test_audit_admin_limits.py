"""Audit of the admin surface: a key's budget or limit past what the limiter can count (1e308 USD became infinity
nano-dollars) was stored, and from then on GET /admin/keys answered 500; the policy view's explain took a body
the request path would refuse (a 500). Both are 400s now."""
from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest

from tests.integration.gateway.conftest import ADMIN_KEY, Gateway

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize("body, param", [
    ({"budget": {"usd_per_day": 1e308}}, "budget.usd_per_day"),
    ({"budget": {"usd_per_month": 1e300}}, "budget.usd_per_month"),
    ({"limits": {"requests_per_minute": 2**63}}, "limits.requests_per_minute"),
])
def test_a_limit_past_what_the_limiter_counts_is_400_and_the_key_list_still_answers(
        gateway: Gateway, body: dict[str, Any], param: str) -> None:
    created = httpx.post(f"{gateway.url}/admin/keys", json={"team": "red", **body}, headers=ADMIN, timeout=30)
    assert created.status_code == 400, created.text
    assert created.json()["error"]["param"] == param
    listed = httpx.get(f"{gateway.url}/admin/keys", headers=ADMIN, timeout=30)
    assert listed.status_code == 200, listed.text


def test_a_large_but_countable_budget_is_kept(gateway: Gateway) -> None:
    created = httpx.post(f"{gateway.url}/admin/keys", json={"team": "red", "budget": {"usd_per_day": 1e6}},
                         headers=ADMIN, timeout=30)
    assert created.status_code == 201, created.text
    key = created.json()["key"]
    answer = httpx.post(f"{gateway.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                        json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{gateway.url}/admin/keys", headers=ADMIN, timeout=30).status_code == 200


def test_explain_checks_the_pasted_body_as_the_request_would_be(gateway: Gateway) -> None:
    # unchecked, max_tokens × n (each 2**64 - 1: orjson keeps it an integer) made facts no JSON can hold: 500
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2**64 - 1, "n": 2**64 - 1}
    answer = httpx.post(f"{gateway.url}/console/api/explain", json={"team": "red", "body": body}, headers=ADMIN,
                        timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] in ("max_tokens", "n")


def test_rotate_reads_its_optional_body_as_every_admin_body(gateway: Gateway) -> None:
    """Rotate's body is optional (empty: the default grace); when there is one it is read as the other admin
    bodies are: a compressed one is named as such, nesting is bounded."""
    def new_key() -> str:
        made = httpx.post(f"{gateway.url}/admin/keys", json={"team": "red"}, headers=ADMIN, timeout=30)
        assert made.status_code == 201, made.text
        return str(made.json()["key_id"])

    def rotate(content: bytes, **headers: str) -> httpx.Response:
        return httpx.post(f"{gateway.url}/admin/keys/{new_key()}/rotate", content=content, timeout=30,
                          headers={**ADMIN, "content-type": "application/json", **headers})

    assert rotate(b"").status_code == 200
    zipped = rotate(gzip.compress(b'{"grace_period": "6s"}'), **{"content-encoding": "gzip"})
    assert zipped.status_code == 400 and zipped.json()["error"]["code"] == "unsupported_content_encoding", zipped.text
    deep = rotate(b"[" * 5000 + b"]" * 5000)
    assert deep.status_code == 400 and deep.json()["error"]["code"] == "invalid_json", deep.text
