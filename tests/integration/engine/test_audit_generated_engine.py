"""A seeded, generated-input audit of the engine server (tiny-random on CPU): odd JSON values in every field of
chat, completions and tokenize bodies, plus raw bodies and content types. Each must end below 500, OpenAI-shaped
when refused, with no traceback in the engine's log and the engine still serving."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

import httpx
import pytest

from tests.integration.engine.conftest import Engine

SEED = 1313
MODEL = "tiny-random"
DEEP = "[" * 60 + "]" * 60
ODD = [
    "null", "true", "false", "0", "-0", "-1", "1.5", "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
    "99999999999999999999999999", "-99999999999999999999999999", "1e-400", "9223372036854775808", '""', '" "',
    '"\\u0000"', '"\\ud800"', '"\\u202eabc"', '"nan"', '"1"', "[]", "{}", "[null]", "[[]]", '[""]', "[-1]",
    "[99999999]", '{"type": "weird"}', '{"type": "text"}', DEEP, '"../../etc/passwd"', '"' + "x" * 3000 + '"',
]
MESSAGES = '[{"role": "user", "content": "hi"}]'
BASES = {
    "/v1/chat/completions": {"model": f'"{MODEL}"', "messages": MESSAGES, "max_tokens": "2"},
    "/v1/completions": {"model": f'"{MODEL}"', "prompt": '"hi"', "max_tokens": "2"},
    "/tokenize": {"model": f'"{MODEL}"', "prompt": '"hi"'},
}
SHARED = ["model", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options", "stop", "seed",
          "presence_penalty", "frequency_penalty", "user", "top_k", "ignore_eos", "stop_token_ids", "priority",
          "response_format", "guided_json"]
FIELDS = {
    "/v1/chat/completions": [*SHARED, "messages", "max_completion_tokens", "logprobs", "top_logprobs", "tools"],
    "/v1/completions": [*SHARED, "prompt", "logprobs", "echo", "best_of", "suffix"],
    "/tokenize": ["model", "prompt", "messages", "add_generation_prompt", "add_special_tokens"],
}
MESSAGE_CASES = [
    '[{"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "video"}]}]',
    '[{"role": "user", "content": [{"type": "text", "text": 5}]}]', '[{"role": "user", "content": [5]}]',
    '[{"role": "user", "content": []}]', '[{"role": "ghost", "content": "hi"}]', '[{"role": 5, "content": "hi"}]',
    '[{"role": "assistant", "content": "x"}]', '[{"role": "system", "content": "x"}]',
    '[{"role": "tool", "content": "x", "tool_call_id": 5}]', '[{"role": "user", "content": "a\\u0000b\\u202e"}]',
    '[{"role": "user", "content": "{% raw %}{{ x }}{% endraw %}"}]', '["hi"]', "[null]",
]


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: bytes
    content_type: str = "application/json"


def render(fields: dict[str, str]) -> bytes:
    return ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in fields.items()) + "}").encode()


def cases() -> list[Case]:
    rng = random.Random(SEED)
    out = []
    for path, base in BASES.items():
        for name in FIELDS[path]:
            for value in rng.sample(ODD, 5):
                out.append(Case(f"{path}:{name}={value[:20]}", path, render({**base, name: value})))
    chat = "/v1/chat/completions"
    out += [Case(f"messages={m[:40]}", chat, render({**BASES[chat], "messages": m})) for m in MESSAGE_CASES]
    valid = render(BASES[chat])
    out += [Case(f"raw:{raw[:20]!r}", chat, raw) for raw in (b"", b" ", b"null", b"[]", b"{", b"\x00", b"\xff\xfe",
                                                             b"NaN", b'{"messages": ' + DEEP.encode() + b"}")]
    out += [Case(f"content-type={ct}", chat, valid, ct) for ct in ("text/plain", "", "application/x-www-form-urlencoded")]
    return out


CASES = cases()


def assert_openai_error(response: httpx.Response) -> None:
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and isinstance(error["message"], str), error


@pytest.mark.parametrize("case", CASES, ids=[f"{i}:{c.name}" for i, c in enumerate(CASES)])
def test_generated_input(tiny_engine: Engine, case: Case) -> None:
    before = len(tiny_engine.proc.output())
    headers = {"content-type": case.content_type} if case.content_type else {}
    response = httpx.post(f"{tiny_engine.url}{case.path}", content=case.body, headers=headers, timeout=120)
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        assert_openai_error(response)
    elif "text/event-stream" not in response.headers.get("content-type", ""):
        response.json()
    assert httpx.get(f"{tiny_engine.url}/health", timeout=30).status_code == 200
    log = tiny_engine.proc.output()[before:]
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {**BASES["/v1/chat/completions"], "model": '"\\ud800"'}),
    ("/v1/completions", {**BASES["/v1/completions"], "model": '"a\\udfffb"', "stream": "true"}),
    ("/tokenize", {**BASES["/tokenize"], "model": '"\\ud800"'}),
])
def test_a_model_name_with_a_lone_surrogate_is_a_404_naming_it(tiny_engine: Engine, path: str,
                                                                 body: dict[str, str]) -> None:
    """The 404's message echoes the name, which UTF-8 cannot encode: answering it was a 500."""
    response = httpx.post(f"{tiny_engine.url}{path}", content=render(body),
                          headers={"content-type": "application/json"}, timeout=60)
    assert response.status_code == 404, response.text[:500]
    assert_openai_error(response)
    error = response.json()["error"]
    assert error["param"] == "model" and error["code"] == "model_not_found" and "\\ud" in error["message"]
