"""Ambiguous credentials: a request with two Authorization headers is refused (400 naming the header) on
every route that reads a key, instead of being served as whoever the first header names."""
from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.integration.gateway.conftest import ADMIN_KEY, Gateway


def raw_request(gateway: Gateway, method: str, path: str, auths: list[str], body: bytes = b"") -> tuple[int, Any]:
    """One request written by hand (an HTTP client library may merge or refuse repeated headers)."""
    url = urlsplit(gateway.url)
    head = [f"{method} {path} HTTP/1.1", f"Host: {url.netloc}", "Connection: close",
            "Content-Type: application/json", f"Content-Length: {len(body)}"]
    head += [f"Authorization: Bearer {key}" for key in auths]
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(payload)


CHAT = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.mark.parametrize("method, path, body, who", [
    ("POST", "/v1/chat/completions", CHAT, ("red", "blue")),
    ("GET", "/v1/models", b"", ("red", "blue")),
    ("GET", "/v1/usage", b"", ("red", "admin")),
    ("GET", "/admin/keys", b"", ("admin", "red")),
])
def test_two_authorization_headers_are_refused(gateway: Gateway, method: str, path: str, body: bytes,
                                               who: tuple[str, str]) -> None:
    keys = [ADMIN_KEY if name == "admin" else gateway.keys[name] for name in who]
    status, payload = raw_request(gateway, method, path, keys, body)
    assert status == 400, payload
    error = payload["error"]
    assert error["type"] == "invalid_request_error" and "2 Authorization headers" in error["message"]
    assert error["code"] == "ambiguous_authorization" and error["param"] == "authorization"  # /v1/usage too
    assert raw_request(gateway, method, path, keys[:1], body)[0] == 200  # one of them alone is served


def test_the_same_key_twice_is_refused_too(gateway: Gateway) -> None:
    status, payload = raw_request(gateway, "POST", "/v1/chat/completions", [gateway.keys["red"]] * 2, CHAT)
    assert status == 400 and payload["error"]["code"] == "ambiguous_authorization"
