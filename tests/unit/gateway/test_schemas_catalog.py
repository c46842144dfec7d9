"""Edge validation (field paths in errors, unknown fields kept) and the catalog / static route."""
from __future__ import annotations

import pytest

from gateway.catalog import build_catalog
from gateway.errors import InvalidRequest, ModelNotFound
from gateway.schemas import ChatCompletionRequest, parse_body
from policies.decision import Target
from policies.schema import Policy


def test_unknown_fields_kept() -> None:
    parsed = parse_body(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": "x",
                                                                             "weird": 1}], "vendor_x": True})
    assert parsed.model_extra == {"vendor_x": True}


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": [{"role": "user", "content": [1]}]}, "messages[0].content"),
    ({"model": "m", "messages": [{"role": "user"}], "top_logprobs": 50}, "top_logprobs"),
    ({"model": "m", "messages": [{"role": "user"}], "stop": 3}, "stop"),
    ({"model": "", "messages": [{"role": "user"}]}, "model"),
])
def test_param_paths(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(ChatCompletionRequest, body)
    assert info.value.param == param


@pytest.mark.parametrize("extra, param", [
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"stream": False, "stream_options": {"include_usage": True}}, "stream_options"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": False, "top_logprobs": 0}, "top_logprobs"),
])
def test_fields_valid_alone_but_not_together_are_refused(extra: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_body(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user"}], **extra})
    assert info.value.param == param and info.value.code == "invalid_value"


def test_fields_that_go_together_pass() -> None:
    chat = {"model": "m", "messages": [{"role": "user"}]}
    assert parse_body(ChatCompletionRequest, {**chat, "stream": True, "stream_options": {"include_usage": True}})
    assert parse_body(ChatCompletionRequest, {**chat, "logprobs": True, "top_logprobs": 2})
    assert parse_body(ChatCompletionRequest, {**chat, "stream": False, "stream_options": None})


def test_ints_are_valid_floats() -> None:
    assert parse_body(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user"}], "temperature": 1})


POLICY = Policy.model_validate({
    "backends": {
        "local": {"kind": "engine", "model": "tiny-random"},
        "oa": {"kind": "openai", "base_url": "https://api.example/v1", "base_url_env": "OA_URL",
               "api_key_env": "OA_KEY", "requires_env": "OA_KEY"},
    },
    "models": {
        "small": {"deployments": [{"backend": "local", "model": "tiny"}, {"backend": "oa", "model": "gpt-x"}]},
        "big": {"deployments": [{"backend": "oa", "model": "gpt-x"}], "teams": ["blue"]},
    },
})


def test_backend_absent_without_its_env_and_aliases_follow() -> None:
    catalog = build_catalog(POLICY, {}, {"local": "http://127.0.0.1:9/v1"})
    assert set(catalog.backends) == {"local"} and "OA_KEY" in catalog.absent["oa"]
    assert catalog.aliases["small"].targets == (Target("local", "tiny"),)
    assert "big" not in catalog.aliases


def test_env_overrides_and_team_scoping() -> None:
    catalog = build_catalog(POLICY, {"OA_KEY": "k", "OA_URL": "http://proxy/v1/"}, {})
    assert catalog.backends["oa"].base_url == "http://proxy/v1" and catalog.backends["oa"].api_key == "k"
    assert "local" in catalog.absent  # engine without a URL yet
    assert catalog.models_for("red") == ["small"] and catalog.models_for("blue") == ["small", "big"]
    with pytest.raises(ModelNotFound):
        catalog.check_alias("red", "big")
