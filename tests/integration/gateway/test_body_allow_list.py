"""The client's body never configures a backend (issue #10 item 1): a real gateway, the fake upstream
as the honest provider and a second one as the client's chosen "evil" URL, the official SDK's
extra_body as the attacker. Fields outside OpenAI's list never reach the upstream call, for the
HTTP backend and the litellm one; priority comes from the policy, never from the client."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.gateway.conftest import create_key
from tests.support import procs

MESSAGES = [{"role": "user", "content": "a b c"}]
HONEST_KEY, LITELLM_KEY = "honest-upstream-key", "litellm-provider-key"


@dataclass
class Setup:
    fake: str
    evil: str
    clients: dict[str, openai.OpenAI]

    def last(self, server: str) -> dict[str, Any]:
        return httpx.get(f"{server}/_last_request").json()

    def calls(self, server: str) -> int:
        return int(httpx.get(f"{server}/_disconnects").json()["requests"])


def attack(evil: str) -> dict[str, Any]:
    """Every provider-configuration field name litellm or a provider SDK would read from kwargs."""
    url = f"{evil}/v1"
    return {
        "api_base": url, "base_url": url, "api_key": "client-key", "api_version": "2020-01-01",
        "extra_headers": {"x-stolen": "1"}, "headers": {"x-stolen": "1"}, "custom_llm_provider": "openai",
        "timeout": 0.001, "aws_access_key_id": "AKIA", "aws_region_name": "us-east-1",
        "aws_bedrock_runtime_endpoint": url, "vertex_project": "p", "vertex_location": url,
        "azure_ad_token": "t", "mock_response": "mocked by the client", "metadata": {"model_group": "x"},
        "extra_body": {"api_base": url}, "num_retries": 9, "fallbacks": ["evil"], "organization": "org",
        "litellm_params": {"api_base": url}, "drop_params": False, "service_tier": "priority", "store": True,
        "priority": -1000, "fake": {"status": 500}, "unknown_field": 1,
    }


@pytest.fixture(scope="module")
def evil_upstream() -> Iterator[str]:
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    with procs.running(procs.python_module("tests.fakes.openai_upstream", "--port", str(port)), f"{url}/health",
                       name="evil-upstream"):
        yield url


@pytest.fixture(scope="module")
def setup(fake_upstream: str, evil_upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root: Path = tmp_path_factory.mktemp("allow-list")
    config = root / "policy.yaml"
    config.write_text(f"""
health: {{failure_threshold: 1000000}}
backends:
  http: {{kind: openai, base_url: "{fake_upstream}/v1", api_key: {HONEST_KEY}}}
  lit: {{kind: litellm, model: openai, base_url: "{fake_upstream}/v1", api_key: {LITELLM_KEY}}}
  lit_env: {{kind: litellm, model: openai, api_key: {LITELLM_KEY}}}   # litellm's URL from OPENAI_BASE_URL
  vllm:
    kind: openai
    base_url: "{fake_upstream}/v1"
    state: vllm
    state_url: "{fake_upstream}/health"
    extra_body_fields: [min_tokens]
    default_max_tokens: 77
models:
  m: {{deployments: [{{backend: http, model: m}}]}}
  lm: {{deployments: [{{backend: lit, model: m}}]}}
  lm-env: {{deployments: [{{backend: lit_env, model: m}}]}}
  engine: {{deployments: [{{backend: vllm, model: m}}]}}
teams:
  red: {{}}
  gold: {{priority: 3}}
""")
    data = root / "data"
    keys = {team: create_key(data, team, config) for team in ("red", "gold")}
    env = {"HYBRIDGW_DATA_DIR": str(data), "OPENAI_BASE_URL": f"{fake_upstream}/v1", "OPENAI_API_BASE": "",
           "OPENAI_API_KEY": ""}
    with procs.served(config, env, name="gateway-allow-list") as gateway:
        clients = {team: openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
                   for team, key in keys.items()}
        yield Setup(fake_upstream, evil_upstream, clients)
        for client in clients.values():
            client.close()


def _sent_fields(sent: dict[str, Any]) -> set[str]:
    return set(sent["body"])


@pytest.mark.parametrize("stream", [False, True])
def test_http_backend_sends_only_openai_fields(setup: Setup, stream: bool) -> None:
    before = setup.calls(setup.evil)
    reply = setup.clients["red"].chat.completions.create(model="m", messages=MESSAGES, temperature=0.5,
                                                         stream=stream, extra_body=attack(setup.evil))
    text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream else \
        reply.choices[0].message.content
    assert text == "tok0 tok1 tok2 tok3 "  # the fake's own answer: not mocked, not failed by "fake"
    sent = setup.last(setup.fake)
    allowed = {"model", "messages", "temperature", "stream", "stream_options"}
    assert _sent_fields(sent) <= allowed, _sent_fields(sent) - allowed
    assert sent["body"]["model"] == "m" and sent["headers"]["authorization"] == f"Bearer {HONEST_KEY}"
    assert "x-stolen" not in sent["headers"]
    assert setup.calls(setup.evil) == before


def _call(sent: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies an upstream call: path, body, credentials, and which headers came with it."""
    headers = sent["headers"]
    return sent["path"], sent["body"], headers.get("authorization"), sorted(headers)


@pytest.mark.parametrize("alias", ["m", "lm"])
def test_each_config_field_leaves_the_upstream_call_unchanged(setup: Setup, alias: str) -> None:
    client = setup.clients["red"]
    client.chat.completions.create(model=alias, messages=MESSAGES, max_tokens=4)
    plain = _call(setup.last(setup.fake))
    for name, value in attack(setup.evil).items():
        before = setup.calls(setup.fake)
        reply = client.chat.completions.create(model=alias, messages=MESSAGES, max_tokens=4, extra_body={name: value})
        assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 ", name
        assert setup.calls(setup.fake) == before + 1, name
        assert _call(setup.last(setup.fake)) == plain, name


@pytest.mark.parametrize("alias", ["lm", "lm-env"])
def test_litellm_backend_never_calls_the_clients_url(setup: Setup, alias: str) -> None:
    before = setup.calls(setup.evil)
    reply = setup.clients["red"].chat.completions.create(model=alias, messages=MESSAGES, max_tokens=4,
                                                         extra_body=attack(setup.evil))
    assert reply.choices[0].message.content == "tok0 tok1 tok2 tok3 "
    assert setup.calls(setup.evil) == before  # the provider key went nowhere else
    sent = setup.last(setup.fake)
    assert sent["headers"]["authorization"] == f"Bearer {LITELLM_KEY}"
    assert "x-stolen" not in sent["headers"]
    assert not _sent_fields(sent) & set(attack(setup.evil)), _sent_fields(sent) & set(attack(setup.evil))


@pytest.mark.parametrize("field", ["api_base", "base_url"])
def test_litellm_key_never_goes_to_a_url_in_the_body(setup: Setup, field: str) -> None:
    """The reported attack alone: the provider's key sent to the client's URL, its answer returned."""
    before_evil, before_fake = setup.calls(setup.evil), setup.calls(setup.fake)
    setup.clients["red"].chat.completions.create(model="lm-env", messages=MESSAGES,
                                                 extra_body={field: f"{setup.evil}/v1"})
    assert setup.calls(setup.evil) == before_evil
    assert setup.calls(setup.fake) == before_fake + 1
    assert setup.last(setup.fake)["headers"]["authorization"] == f"Bearer {LITELLM_KEY}"


def test_litellm_backend_streams_unchanged(setup: Setup) -> None:
    before = setup.calls(setup.evil)
    chunks = list(setup.clients["red"].chat.completions.create(model="lm-env", messages=MESSAGES, stream=True,
                                                               extra_body=attack(setup.evil)))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "tok0 tok1 tok2 tok3 "
    assert setup.calls(setup.evil) == before


def test_engine_priority_is_the_teams_never_the_clients(setup: Setup) -> None:
    setup.clients["red"].chat.completions.create(model="engine", messages=MESSAGES,
                                                 extra_body={"priority": -1000, "min_tokens": 2, "top_k": 3})
    sent = setup.last(setup.fake)["body"]
    assert "priority" not in sent  # a team without one sends none
    assert sent["min_tokens"] == 2 and "top_k" not in sent  # only the extras this backend allows
    assert sent["max_tokens"] == 77  # the backend's default_max_tokens, the client set none
    setup.clients["gold"].chat.completions.create(model="engine", messages=MESSAGES, max_tokens=5,
                                                  extra_body={"priority": -1000})
    sent = setup.last(setup.fake)["body"]
    assert (sent["priority"], sent["max_tokens"]) == (3, 5)
    setup.clients["gold"].chat.completions.create(model="m", messages=MESSAGES, extra_body={"priority": -1000})
    assert "priority" not in setup.last(setup.fake)["body"]  # hosted backends never get one


def test_embeddings_and_completions_have_their_own_lists(setup: Setup) -> None:
    setup.clients["red"].embeddings.create(model="m", input="x", extra_body={"api_base": "x", "messages": []})
    assert _sent_fields(setup.last(setup.fake)) == {"model", "input", "encoding_format"}  # the SDK adds it
    setup.clients["red"].completions.create(model="m", prompt="p", echo=False, extra_body={"api_key": "x"})
    assert _sent_fields(setup.last(setup.fake)) == {"model", "prompt", "echo"}
