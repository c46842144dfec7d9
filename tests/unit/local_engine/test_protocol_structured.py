"""Structured output the engine cannot honour is refused naming the field, never silently ignored."""
from __future__ import annotations

from typing import Any

import pytest

from local_engine.protocol import ChatCompletionRequest, CompletionRequest, ProtocolError

ASK = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("extra, param", [
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "a"}}}, "response_format"),
    ({"response_format": "json"}, "response_format"),
    ({"guided_json": {"type": "object"}}, "guided_json"),
    ({"guided_choice": ["a", "b"]}, "guided_choice"),
])
def test_refused(extra: dict[str, Any], param: str) -> None:
    for body in (ChatCompletionRequest(messages=ASK, **extra), CompletionRequest(prompt="x", **extra)):
        with pytest.raises(ProtocolError) as refused:
            body.sampling_params(4, None)
        assert refused.value.param == param and refused.value.code == "structured_output_unsupported"


def test_plain_text_is_served() -> None:
    body = ChatCompletionRequest(messages=ASK, response_format={"type": "text"})
    assert body.sampling_params(4, None).max_tokens == 4
