"""What the engine's HTTP parser cannot read (a malformed request line, a control character in a header,
ambiguous framing, a malformed chunk in the body) is answered with an OpenAI-shaped 400 (code
invalid_http_request), as the gateway's is; uvicorn's own answer was text/plain "Invalid HTTP request
received.". Sent on a raw socket."""
from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import httpx
import pytest

from tests.integration.engine.conftest import Engine


def _exchange(engine: Engine, raw: bytes) -> bytes:
    """Everything the engine answers to `raw` until it closes the connection."""
    url = urlsplit(engine.url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(raw)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("raw", [
    b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n",  # a malformed request line
    b"\x00\x01\x02 / HTTP/1.1\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\x01b\r\n\r\n",  # a control character in a header
    b'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}',
    # a body whose chunked framing breaks after the head was read (the route already runs): was no answer at all
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
], ids=["request-line", "binary", "control-char", "length-and-chunked", "chunk-size", "chunk-end"])
def test_what_the_parser_refuses_is_an_openai_shaped_400(tiny_engine: Engine, raw: bytes) -> None:
    answer = _exchange(tiny_engine, raw)
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0] == "HTTP/1.1 400 Bad Request", answer[:500]
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
    assert headers["content-type"] == "application/json", answer[:500]
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_http_request"), error
    assert httpx.get(f"{tiny_engine.url}/health", timeout=30).status_code == 200
