"""A seeded, generated-input audit of the gateway's model endpoints: a few hundred mutations of valid bodies
(odd JSON values in every field, duplicate keys, raw bodies, content types, gzip, long headers) sent to a
real gateway; each must end below 500 with an OpenAI-shaped error when refused, its usage record written, and
no traceback in the gateway's log."""
from __future__ import annotations

import gzip
import json
import random
import socket
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from gateway.upstream_body import FIELDS_BY_PATH
from tests.integration.gateway.conftest import ADMIN_KEY, UPSTREAM_KEY, Gateway

SEED = 1313
DEEP = "[" * 60 + "]" * 60
# JSON texts, several of which Python's json reads but no client should send (NaN, 1e400, lone surrogates).
ODD = [
    "null", "true", "false", "0", "-0", "-1", "1.5", "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
    "99999999999999999999999999", "-99999999999999999999999999", "1e-400", '""', '" "', '"\\u0000"',
    '"\\ud800"', '"\\udfff\\ud800"', '"\\u202eabc"', '"\\ufeff"', '"nan"', '"inf"', '"1"', "[]", "{}", "[null]",
    "[[]]", '[""]', '[{}]', '{"": null}', '{"type": "weird"}', '{"type": null}', DEEP,
    '"../../etc/passwd"', '"http://169.254.169.254/latest"', '"m/../m"', '"m;status=500"', '"' + "x" * 5000 + '"',
]
MESSAGES = '[{"role": "user", "content": "hi"}]'
BASES = {
    "/v1/chat/completions": {"model": '"m"', "messages": MESSAGES, "max_tokens": "5"},
    "/v1/completions": {"model": '"m"', "prompt": '"hi"', "max_tokens": "5"},
    "/v1/embeddings": {"model": '"m"', "input": '"hi"'},
}
FIELDS = {
    "/v1/chat/completions": ["model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                             "n", "stream", "stream_options", "logprobs", "top_logprobs", "tools", "tool_choice",
                             "response_format", "stop", "seed", "user", "presence_penalty", "frequency_penalty",
                             "logit_bias", "parallel_tool_calls", "functions", "metadata", "zzz_unknown"],
    "/v1/completions": ["model", "prompt", "max_tokens", "temperature", "n", "stream", "stream_options",
                        "logprobs", "echo", "best_of", "suffix", "stop", "user", "logit_bias"],
    "/v1/embeddings": ["model", "input", "encoding_format", "dimensions", "user"],
}
# Odd messages (chat) as JSON texts: the shape is right, a part is not.
MESSAGE_PARTS = [
    '[{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "video", "video": 1}]}]',
    '[{"role": "user", "content": [{"type": "text"}]}]',
    '[{"role": "user", "content": [{"type": "text", "text": 5}]}]',
    '[{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]',
    '[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": 5}}]}]',
    '[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": 5, "format": []}}]}]',
    '[{"role": "user", "content": [5]}]', '[{"role": "user", "content": [null]}]',
    '[{"role": "user", "content": []}]', '[{"role": "ghost", "content": "hi"}]',
    '[{"role": "tool", "content": "x", "tool_call_id": 5}]',
    '[{"role": "assistant", "content": null, "tool_calls": [{"id": 1, "type": "function", "function": 5}]}]',
    '[{"role": "assistant", "content": null, "tool_calls": 5}]', '[{"role": "user", "content": "hi", "name": []}]',
    '[{"role": "user", "content": "a\\u0000b\\ud800c\\u202e"}]', '["hi"]', '[[]]', '[null]',
]


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)


def render(fields: list[tuple[str, str]]) -> bytes:
    """An object from (key, JSON text) pairs, keys repeated as given."""
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields) + "}").encode()


def field_cases(rng: random.Random) -> list[Case]:
    out = []
    for path, base in BASES.items():
        for name in FIELDS[path]:
            for value in rng.sample(ODD, 7):
                out.append(Case(f"{path}:{name}={value[:20]}", path, render([*{**base, name: value}.items()])))
    for value in MESSAGE_PARTS:
        base = BASES["/v1/chat/completions"]
        out.append(Case(f"messages={value[:40]}", "/v1/chat/completions", render([*{**base, "messages": value}.items()])))
    return out


def raw_cases() -> list[Case]:
    chat = "/v1/chat/completions"
    valid = render([*BASES[chat].items()])
    ctype = (("content-type", "application/json"),)
    out = [Case(f"raw:{raw[:20]!r}", chat, raw) for raw in (
        b"", b" ", b"\n\t ", b"null", b"0", b"NaN", b"[]", b'"x"', b"{", b"}", b"{}", b'{"model": "m"}x',
        b"\xef\xbb\xbf" + valid, b"\x00", valid + b"\x00", b"\xff" * 10, b'{"model": "m", "messages": ' + DEEP.encode() + b"}",
        render([("model", '"m"'), ("messages", MESSAGES), ("model", '"nope"')]),
        render([("model", '"nope"'), ("messages", MESSAGES), ("model", '"m"')]),
        render([("model", '"m"'), ("messages", MESSAGES), ("stream", "true"), ("stream", '"yes"')]),
        render([("model", '"m"'), ("messages", MESSAGES), ("max_tokens", "5"), ("max_tokens", "-5")]),
    )]
    for ct in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
               "application/json; charset=latin-1", "application/json; charset=utf-16", "", "application/xml"):
        out.append(Case(f"content-type={ct}", chat, valid, (("content-type", ct),)))
    out.append(Case("no content-type", chat, valid, ()))
    out.append(Case("gzip body", chat, gzip.compress(valid), (*ctype, ("content-encoding", "gzip"))))
    out.append(Case("bogus encoding", chat, valid, (*ctype, ("content-encoding", "br"))))
    for header in ("x-request-id", "user-agent", "x-hybridgw-tags", "traceparent", "openai-organization",
                   "x-hybridgw-trace", "idempotency-key"):
        out.append(Case(f"long {header}", chat, valid, (*ctype, (header, "a" * 16000))))
        out.append(Case(f"odd {header}", chat, valid, (*ctype, (header, "../\u00e9\u202e;=,\"'"))))
    return out


def cases() -> list[Case]:
    return field_cases(random.Random(SEED)) + raw_cases()


CASES = cases()


def send(gateway: Gateway, case: Case, request_id: str) -> httpx.Response:
    headers = [("authorization", gateway.auth()["authorization"]), *case.headers]
    if not any(k == "x-request-id" for k, _ in case.headers):
        headers.append(("x-request-id", request_id))
    raw = [(k.encode(), v.encode("utf-8")) for k, v in headers]
    return httpx.post(f"{gateway.url}{case.path}", content=case.body, headers=raw, timeout=60)


def assert_openai_error(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str), error
    return error


def assert_upstream_saw_only_the_allowed(gateway: Gateway, case: Case) -> None:
    """A served case reached the policy's address with the policy's model and key, and listed fields only."""
    seen = gateway.last_upstream_request()
    assert seen["path"] == case.path, seen["path"]
    assert seen["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    allowed = FIELDS_BY_PATH[case.path.removeprefix("/v1/")] | {"model", "fake", "guided_json"}
    assert set(seen["body"]) <= allowed and seen["body"]["model"] == "m", sorted(seen["body"])


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c.name}" for i, c in enumerate(CASES)])
def test_generated_input(gateway: Gateway, case: Case) -> None:
    before = len(gateway.proc.output())
    request_id = f"gen-{uuid.uuid4().hex}"
    response = send(gateway, case, request_id)
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert_openai_error(response)
    elif "text/event-stream" in response.headers.get("content-type", ""):
        assert response.text.endswith("data: [DONE]\n\n") and '"error"' not in response.text, response.text[-500:]
        assert_upstream_saw_only_the_allowed(gateway, case)
    else:
        response.json()
        assert_upstream_saw_only_the_allowed(gateway, case)
    record = gateway.record_for(response.headers["x-hybridgw-request-id"])
    assert record["http_status"] == response.status_code, record
    log = gateway.proc.output()[before:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("value", ['""', "[]", '[""]', "[[]]", '["a", ""]', "[[1], []]"])
def test_an_empty_embeddings_input_is_a_400_naming_it(gateway: Gateway, value: str) -> None:
    """Was passed on; the upstream answered it with no vectors and the client got a 502 (OpenAI: a 400)."""
    case = Case(f"input={value}", "/v1/embeddings", render([("model", '"m"'), ("input", value)]))
    response = send(gateway, case, f"gen-{uuid.uuid4().hex}")
    assert response.status_code == 400, response.text[:500]
    error = assert_openai_error(response)
    assert error["param"] == "input" and error["type"] == "invalid_request_error"
    assert gateway.record_for(response.headers["x-hybridgw-request-id"])["http_status"] == 400


@pytest.mark.parametrize("body, param", [
    ({"limits": {"requests_per_minute": True}}, "limits.requests_per_minute"),  # was stored as 1 rpm
    ({"limits": {"tokens_per_minute": "5000"}}, "limits.tokens_per_minute"),
    ({"budget": {"usd_per_day": "2"}}, "budget.usd_per_day"),
])
def test_a_key_limit_or_budget_of_the_wrong_type_is_a_400(gateway: Gateway, body: dict[str, Any], param: str) -> None:
    """The admin key bodies read leniently: `true` became a limit of 1 and strings became numbers (a 201)."""
    response = httpx.post(f"{gateway.url}/admin/keys", json={"team": "red", **body},
                          headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
    assert response.status_code == 400, response.text[:500]
    assert assert_openai_error(response)["param"] == param


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_a_compressed_body_is_a_400_that_says_so(gateway: Gateway, encoding: str) -> None:
    """Was a 400 whose message read the compressed bytes as text ("str is not valid UTF-8: surrogates not
    allowed"), which tells the client nothing."""
    raw = gzip.compress(render([*BASES["/v1/chat/completions"].items()]))
    case = Case(encoding, "/v1/chat/completions", raw, (("content-type", "application/json"),
                                                         ("content-encoding", encoding)))
    response = send(gateway, case, f"gen-{uuid.uuid4().hex}")
    assert response.status_code == 400, response.text[:500]
    error = assert_openai_error(response)
    assert error["code"] == "unsupported_content_encoding" and "uncompressed" in error["message"], error
    assert gateway.record_for(response.headers["x-hybridgw-request-id"])["http_status"] == 400


@pytest.mark.parametrize("headers", [
    [(b"authorization", b"Bearer \x7f")],  # a control character httptools refuses
    [(b"x-request-id", b"a\x01b")],
    [(b"transfer-encoding", b"chunked")],  # beside the Content-Length httpx sends: ambiguous framing
])
def test_a_request_the_http_parser_refuses_is_an_openai_shaped_400(gateway: Gateway,
                                                                    headers: list[tuple[bytes, bytes]]) -> None:
    """uvicorn answered these with text/plain "Invalid HTTP request received.", before any route ran."""
    valid = render([*BASES["/v1/chat/completions"].items()])
    response = httpx.post(f"{gateway.url}/v1/chat/completions", content=valid, timeout=30,
                          headers=[(b"content-type", b"application/json"), *headers])
    assert response.status_code == 400, response.text[:500]
    assert assert_openai_error(response)["code"] == "invalid_http_request"


@pytest.mark.parametrize("body", [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n"], ids=["chunk-size", "chunk-end"])
def test_a_body_whose_chunked_framing_breaks_is_an_openai_shaped_400(gateway: Gateway, body: bytes) -> None:
    """The head parsed, the route already reading the body: the connection was closed with no answer at all
    (observability/http_parse_errors.py wrote its 400 only where no request was under way)."""
    before, url = len(gateway.proc.output()), urlsplit(gateway.url)
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {gateway.auth()['authorization']}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(head + body)
        answer = b"".join(iter(lambda: sock.recv(65536), b""))
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:500]
    error = json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_http_request", error
    assert "Traceback" not in gateway.proc.output()[before:]
