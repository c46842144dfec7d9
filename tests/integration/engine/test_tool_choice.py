"""The engine has no tool-call parser and cannot constrain its output to a call: what asks for a tool call
(tool_choice "auto" — also what tools without a tool_choice mean —, "required", a named function, and the
deprecated function_call) is a 400 naming the field, never plain text with status 200 (what it answered
before: a silent wrong answer). tool_choice "none" is served: a text answer, the tools in the template."""
from __future__ import annotations

from typing import Any

import openai
import pytest

from tests.integration.engine.conftest import Engine

MODEL = "tiny-random"
MESSAGES = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
FUNCTIONS = [TOOLS[0]["function"]]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


def _refusal(engine: Engine, **kw: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as refused, engine.client() as client:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, **kw)  # type: ignore[call-overload]
    assert refused.value.status_code == 400
    body = refused.value.body
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}, body
    assert body["type"] == "invalid_request_error"
    return body


@pytest.mark.parametrize("kw, param", [
    ({"tools": TOOLS, "tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": NAMED}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "auto"}, "tool_choice"),
    ({"tools": TOOLS}, "tool_choice"),  # OpenAI's default with tools: "auto"
    ({"tools": TOOLS, "tool_choice": "required", "stream": True}, "tool_choice"),  # before any event
    ({"tools": TOOLS, "tool_choice": NAMED, "parallel_tool_calls": False}, "tool_choice"),
    ({"functions": FUNCTIONS, "function_call": {"name": "get_weather"}}, "function_call"),
    ({"functions": FUNCTIONS, "function_call": "auto"}, "function_call"),
    ({"functions": FUNCTIONS}, "function_call"),
], ids=["required", "named", "auto", "tools-alone", "required-stream", "named-not-parallel", "function-named",
        "function-auto", "functions-alone"])
def test_a_request_for_a_tool_call_is_a_400_naming_the_field(tiny_engine: Engine, kw: dict[str, Any],
                                                             param: str) -> None:
    body = _refusal(tiny_engine, **kw)
    assert body["param"] == param and body["code"] == "structured_output_unsupported", body
    assert "tool call" in body["message"] and "'none'" in body["message"], body


def test_an_unknown_tool_choice_is_a_400_invalid_value(tiny_engine: Engine) -> None:
    body = _refusal(tiny_engine, tools=TOOLS, tool_choice="sometimes")
    assert (body["param"], body["code"]) == ("tool_choice", "invalid_value") and "'sometimes'" in body["message"]


def test_a_mistyped_tool_choice_names_the_field_not_the_union_member(tiny_engine: Engine) -> None:
    """pydantic tags a union's members in its error location (tool_choice.str, tool_choice.dict[str,any]):
    the param is the field the client wrote."""
    for value in (5, ["required"]):
        body = _refusal(tiny_engine, tools=TOOLS, tool_choice=value)
        assert (body["param"], body["code"]) == ("tool_choice", "invalid_value"), body
    body = _refusal(tiny_engine, extra_body={"messages": [{"role": "user", "content": 7}]})
    assert body["param"] == "messages.0.content", body


def test_tool_choice_none_is_a_text_answer(tiny_engine: Engine) -> None:
    """Served before too (the guard on what stays accepted): tools in the template, text out, no tool_calls."""
    with tiny_engine.client() as client:
        for kw in ({"tools": TOOLS, "tool_choice": "none"}, {"functions": FUNCTIONS, "function_call": "none"},
                   {"tool_choice": "none"}, {"tools": [], "parallel_tool_calls": True}):
            done = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=4, **kw)  # type: ignore[call-overload]
            choice = done.choices[0]
            assert choice.message.tool_calls is None and choice.finish_reason in ("stop", "length"), done
            assert choice.message.content is not None and done.usage is not None and done.usage.completion_tokens
