"""The policy file's schema (pydantic, strict): backends, model aliases, teams, rules, SLOs.

The gateway's config file *is* the policy file; `policies.loader` reads YAML into `Policy`.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Timeouts(_Strict):
    connect_s: float = 5.0
    first_byte_s: float = 60.0  # request sent → first response byte (first token when streamed)
    between_chunks_s: float = 60.0  # the longest gap allowed between two streamed chunks


class BackendSpec(_Strict):
    """A place requests can go.

    kind: `openai` — any OpenAI-compatible HTTP server (OpenAI, vLLM, SGLang, TRT-LLM, NIM, our
    engine); `litellm` — a provider litellm speaks to (Anthropic, Bedrock, Vertex, …);
    `engine` — our local engine, spawned and supervised by `hybridgw serve`.
    """

    kind: Literal["openai", "litellm", "engine"]
    base_url: str | None = None  # openai: required; engine: set to use an already running one
    api_key: str | None = None  # literal key (tests); prefer api_key_env
    api_key_env: str | None = None  # environment variable holding the key
    base_url_env: str | None = None  # environment variable that overrides base_url when set
    requires_env: str | None = None  # backend is absent unless this environment variable is set
    model: str | None = None  # engine: model to load (e.g. smollm2); litellm: provider prefix
    engine_args: list[str] = Field(default_factory=list)  # extra `hybridgw engine` arguments
    timeouts: Timeouts = Field(default_factory=Timeouts)
    max_connections: int = 256


class Deployment(_Strict):
    """An alias served by one backend under that backend's own model name."""

    backend: str
    model: str


class ModelAlias(_Strict):
    deployments: list[Deployment] = Field(min_length=1)
    teams: list[str] | None = None  # None: every team may use it


class Policy(_Strict):
    version: int = 1
    backends: dict[str, BackendSpec]
    models: dict[str, ModelAlias]
