"""OpenAI request parsing at the engine's edge: sampling params, refusals naming the field, error table."""
from __future__ import annotations

import pytest

from local_engine.errors import EngineFull, RequestTooLarge
from local_engine.http_errors import http_error, validation_error
from local_engine.protocol import ChatCompletionRequest, CompletionRequest, ProtocolError
from local_engine.trace_context import parse_traceparent


def chat(**kw: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                                 **kw})


def test_chat_fields_become_sampling_params() -> None:
    req = chat(temperature=0, top_p=0.5, stop="END", seed=3, max_completion_tokens=7, top_k=4,
               presence_penalty=0.5, unknown_field=True)
    params = req.sampling_params(req.requested_max_tokens() or 0, req.requested_logprobs())
    assert params.max_tokens == 7 and params.temperature == 0 and params.top_p == 0.5
    assert params.stop == ("END",) and params.seed == 3 and params.top_k == 4
    assert params.presence_penalty == 0.5 and params.logprobs is None


def test_chat_logprobs_and_top_logprobs() -> None:
    assert chat(logprobs=True).requested_logprobs() == 0
    assert chat(logprobs=True, top_logprobs=3).requested_logprobs() == 3
    with pytest.raises(ProtocolError) as err:
        chat(top_logprobs=3).requested_logprobs()
    assert err.value.param == "top_logprobs"


@pytest.mark.parametrize(("field", "value"), [("n", 2), ("temperature", 3.0), ("top_p", 0.0),
                                              ("frequency_penalty", -5.0)])
def test_out_of_range_fields_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ProtocolError) as err:
        chat(**{field: value}).sampling_params(16, None)
    assert err.value.param == field


def test_non_positive_max_tokens_is_refused() -> None:
    with pytest.raises(ProtocolError) as err:
        chat(max_tokens=0).requested_max_tokens()
    assert err.value.param == "max_tokens"


def test_text_parts_are_joined_for_the_template() -> None:
    req = chat(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])
    assert req.template_messages() == [{"role": "user", "content": "ab"}]


def test_completion_prompt_forms() -> None:
    assert CompletionRequest(prompt="x").single_prompt() == "x"
    assert CompletionRequest(prompt=["x"]).single_prompt() == "x"
    assert CompletionRequest(prompt=[1, 2]).single_prompt() == [1, 2]
    assert CompletionRequest(prompt="x").requested_max_tokens() == 16
    with pytest.raises(ProtocolError) as err:
        CompletionRequest(prompt=["a", "b"]).single_prompt()
    assert err.value.param == "prompt"


def test_error_table() -> None:
    too_large = http_error(RequestTooLarge(num_prompt_tokens=100, max_tokens=50, max_model_len=120,
                                           num_blocks_needed=10, num_blocks_total=64, block_size=16))
    assert too_large.status == 400 and too_large.code == "context_length_exceeded"
    assert "120" in too_large.message and "150" in too_large.message
    pool = http_error(RequestTooLarge(num_prompt_tokens=100, max_tokens=50, max_model_len=2048,
                                      num_blocks_needed=10, num_blocks_total=4, block_size=16))
    assert "10 KV blocks" in pool.message and "4 blocks" in pool.message
    full = http_error(EngineFull(8, 8))
    assert full.status == 503 and full.headers == {"Retry-After": "1"}
    assert set(full.body()["error"]) == {"message", "type", "param", "code"}
    assert http_error(KeyError("x")).status == 500


def test_validation_error_names_the_field() -> None:
    err = validation_error([{"loc": ("body", "messages", 0, "role"), "msg": "Field required", "type": "missing"}])
    assert err.status == 400 and err.param == "messages.0.role"


def test_traceparent_parsing() -> None:
    tp = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert tp is not None and tp.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and tp.sampled
    assert parse_traceparent("garbage") is None
    assert parse_traceparent("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
