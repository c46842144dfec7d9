"""The generated gateway audit (tests/integration/gateway/test_audit_generated.py) aimed at a local-only alias:
a seeded sample of its cases through a real gateway to a real engine (tiny-random), and the bodies the gateway
passes but the engine refuses. Each ends below 500, OpenAI-shaped when refused, its record written, no traceback."""
from __future__ import annotations

import random

import httpx
import pytest

from tests.integration.gateway import test_audit_generated as generated
from tests.integration.routing.conftest import Gateway

LOCAL = [generated.Case(c.name, c.path, c.body.replace(b'"model": "m"', b'"model": "private"'), c.headers)
         for c in random.Random(1313).sample([c for c in generated.CASES if c.path != "/v1/embeddings"], 80)]
CHAT = '"model": "private", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3'
# (body, the field the engine names): each passes the gateway's checks and is refused by the engine.
REFUSED = [
    (f'{{{CHAT}, "n": 2}}', "n"),
    (f'{{{CHAT}, "stop": {[str(i) for i in range(17)]}}}'.replace("'", '"'), "stop"),
    (f'{{{CHAT}, "response_format": {{"type": "json_object"}}}}', "response_format"),
    (f'{{{CHAT}, "presence_penalty": 5}}', "presence_penalty"),
    (f'{{{CHAT}, "top_p": 0}}', "top_p"),
    ('{"model": "private", "messages": [{"role": "user", "content": [{"type": "image_url", '
     '"image_url": {"url": "https://example.com/a.png"}}]}], "max_tokens": 3}', "messages"),
    ('{"model": "private", "prompt": ["a", "b"], "max_tokens": 3}', "prompt"),
    ('{"model": "private", "prompt": [99999999], "max_tokens": 3}', "prompt"),
    ('{"model": "private", "prompt": "x", "max_tokens": 3, "best_of": 2}', "best_of"),
    ('{"model": "private", "prompt": "x", "max_tokens": 3, "suffix": "y"}', "suffix"),
]


def send(roomy: Gateway, path: str, body: bytes, headers: tuple[tuple[str, str], ...]) -> httpx.Response:
    raw = [(k.encode(), v.encode()) for k, v in (("authorization", f"Bearer {roomy.key}"), *headers)]
    return httpx.post(f"{roomy.url}{path}", content=body, headers=raw, timeout=120)


def check(roomy: Gateway, response: httpx.Response, before: int) -> None:
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        generated.assert_openai_error(response)
    elif "text/event-stream" in response.headers.get("content-type", ""):
        assert response.text.endswith("data: [DONE]\n\n"), response.text[-500:]
    else:
        response.json()
    assert roomy.record_for(response.headers["x-hybridgw-request-id"])["http_status"] == response.status_code
    assert "Traceback" not in roomy.log()[before:]


@pytest.mark.parametrize("case", LOCAL, ids=[f"{i}:{c.name}" for i, c in enumerate(LOCAL)])
def test_generated_input_to_the_engine(roomy: Gateway, case: generated.Case) -> None:
    before = len(roomy.log())
    check(roomy, send(roomy, case.path, case.body, case.headers), before)


@pytest.mark.parametrize("body, param", REFUSED, ids=[p for _, p in REFUSED])
def test_what_the_engine_refuses_is_a_400_naming_the_field(roomy: Gateway, body: str, param: str) -> None:
    before = len(roomy.log())
    path = "/v1/completions" if '"prompt"' in body else "/v1/chat/completions"
    response = send(roomy, path, body.encode(), (("content-type", "application/json"),))
    check(roomy, response, before)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text[:500]
