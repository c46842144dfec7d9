"""The gateway's own request id and the client's x-request-id beside it (pure: no sockets)."""
from __future__ import annotations

import pytest

from gateway.exchange import Exchange, client_request_id_from


@pytest.mark.parametrize("header", [None, "", "has space", "x" * 129, "tab\there", "é-accent", "Ã©", "😀"])
def test_unusable_client_ids_are_ignored(header: str | None) -> None:
    assert client_request_id_from(header) == ""


def test_the_gateway_id_is_fresh_even_when_the_client_repeats_its_own() -> None:
    first, second = Exchange.begin("chat", "same-id"), Exchange.begin("chat", "same-id")
    assert first.request_id != second.request_id and first.request_id.startswith("req_")
    assert first.client_request_id == second.client_request_id == "same-id"
    headers = first.response_headers()
    assert headers["x-request-id"] == "same-id" and headers["x-hybridgw-request-id"] == first.request_id


def test_without_a_client_id_both_headers_carry_the_gateways() -> None:
    ex = Exchange.begin("chat", "Ã©-not-ascii")
    assert ex.client_request_id == ""
    assert ex.response_headers()["x-request-id"] == ex.response_headers()["x-hybridgw-request-id"] == ex.request_id
