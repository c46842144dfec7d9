"""Backend for providers whose wire format is not OpenAI's (Anthropic, Bedrock, Vertex, …) through
litellm, its output normalised to OpenAI chunks. litellm is imported on open(), never at import
time (seconds), and OpenAI-compatible upstreams never come here (they use openai_http). Redirects are
not followed where litellm lets us say so (gateway/backends/litellm_redirects.py): a 3xx is a 502."""
from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from gateway.backends.answer_shape import shape_problem
from gateway.backends.base import BackendCounters, BackendState, Chunks, UpstreamRequest, UpstreamResponse
from gateway.backends.litellm_redirects import provider_of, redirect_free_handler, stop_sdk_redirects
from gateway.catalog import ResolvedBackend
from gateway.errors import UpstreamError, redacted

_CALLS = {"chat/completions": "acompletion", "completions": "atext_completion", "embeddings": "aembedding"}


# litellm call arguments that configure the call rather than the answer (where it goes, with which
# credentials, how it is retried, logged or mocked); plus every provider-prefixed credential below.
_LITELLM_SETTINGS = frozenset({
    "api_base", "base_url", "api_key", "api_version", "api_type", "organization", "project", "timeout",
    "custom_llm_provider", "extra_headers", "headers", "extra_body", "extra_query", "metadata", "mock_response",
    "mock_tool_calls", "mock_timeout", "drop_params", "additional_drop_params", "num_retries", "max_retries",
    "fallbacks", "context_window_fallback_dict", "model_list", "litellm_params", "litellm_call_id",
    "litellm_logging_obj", "logger_fn", "callbacks", "input_cost_per_token", "output_cost_per_token",
    "client", "deployment_id", "region_name", "azure_ad_token", "azure_ad_token_provider", "proxy_server_request",
    "preset_cache_key", "caching", "cache", "no-log", "acompletion", "client_secret", "tenant_id",
})
_LITELLM_SETTING_PREFIXES = ("aws_", "vertex_", "azure_", "watsonx_", "litellm_", "api_", "mock_")


def _is_litellm_setting(name: str) -> bool:
    return name in _LITELLM_SETTINGS or name.startswith(_LITELLM_SETTING_PREFIXES)


def _error(backend: str, exc: BaseException, after_first_byte: bool = False) -> UpstreamError:
    """litellm's exception → UpstreamError with the provider's status and message."""
    name = type(exc).__name__
    message = str(getattr(exc, "message", "") or exc)
    if isinstance(exc, TimeoutError) or name == "Timeout":
        return UpstreamError(f"upstream {backend} timed out: {message}", backend=backend, kind="timeout",
                             after_first_byte=after_first_byte)
    if name == "APIConnectionError":
        return UpstreamError(f"upstream {backend} unreachable: {message}", backend=backend, kind="connect",
                             after_first_byte=after_first_byte)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 300 <= status < 400:  # not followed: the client sees a 502, as for openai_http
        return UpstreamError(f"upstream {backend} answered {status}, a redirect; redirects are not followed: set the "
                             "backend's base_url to the address that serves the API", backend=backend,
                             kind="protocol", after_first_byte=after_first_byte)
    return UpstreamError(f"upstream {backend} returned {status or 'an error'}: {message}", backend=backend,
                         upstream_status=status if isinstance(status, int) else None,
                         kind="status" if isinstance(status, int) else "protocol", after_first_byte=after_first_byte)


def _dump(obj: Any) -> dict[str, Any]:
    data = obj.model_dump(exclude_none=True) if hasattr(obj, "model_dump") else dict(obj)
    return data if isinstance(data, dict) else {}


class LiteLLMBackend:
    def __init__(self, spec: ResolvedBackend) -> None:
        self.name = spec.name
        self.kind = spec.kind
        self.spec = spec
        self._litellm: Any = None
        self._counters = BackendCounters()
        self._handlers: dict[str, Any] = {}  # provider → its redirect-free client (None: litellm's own)

    async def open(self) -> None:
        self._litellm = await asyncio.to_thread(importlib.import_module, "litellm")
        stop_sdk_redirects(self._litellm)

    async def aclose(self) -> None:
        self._litellm = None
        handlers, self._handlers = self._handlers, {}
        for handler in handlers.values():
            if handler is not None:
                await handler.close()

    def _client_for(self, model: str) -> Any | None:
        provider = provider_of(model)
        if provider not in self._handlers and self._litellm is not None:
            self._handlers[provider] = redirect_free_handler(self._litellm, provider, self.spec.timeouts.first_byte_s)
        return self._handlers.get(provider)

    def state(self) -> BackendState:
        return self._counters.snapshot(self.name, self.kind)

    def _kwargs(self, request: UpstreamRequest) -> dict[str, Any]:
        # The proxy sent only allowed fields; drop litellm's own settings anyway (an operator's extra
        # could name one), then set them from the spec, so no body key can move the call or its key.
        kwargs = {k: v for k, v in request.body.items() if not _is_litellm_setting(k)}
        model = str(kwargs.pop("model"))
        prefix = self.spec.model_prefix
        kwargs["model"] = f"{prefix}/{model}" if prefix and not model.startswith(f"{prefix}/") else model
        kwargs["api_base"] = self.spec.base_url
        kwargs["api_key"] = self.spec.api_key
        kwargs["timeout"] = self.spec.timeouts.first_byte_s
        kwargs["drop_params"] = True  # OpenAI-only parameters a provider lacks are dropped, not fatal
        # A handler-path provider's redirect-free client goes to chat only (the path checked); its text and
        # embeddings calls keep litellm's client, which follows redirects. (The OpenAI SDK path's session is
        # process-wide: redirect-free for all three, and shared by every litellm backend: litellm_redirects.py.)
        if request.path == "chat/completions" and (client := self._client_for(kwargs["model"])) is not None:
            kwargs["client"] = client
        return kwargs

    async def _call(self, request: UpstreamRequest) -> Any:
        if self._litellm is None:
            raise RuntimeError(f"backend {self.name} is not open")
        call = getattr(self._litellm, _CALLS[request.path])
        try:
            return await call(**self._kwargs(request))
        except Exception as exc:
            self._counters.failures += 1
            raise redacted(_error(self.name, exc), self.spec.api_key) from None

    async def complete(self, request: UpstreamRequest) -> UpstreamResponse:
        self._counters.requests += 1
        self._counters.in_flight += 1
        try:
            data = _dump(await self._call(request))
            if problem := shape_problem(request.path, data):  # litellm normalises, but never relay an empty answer
                self._counters.failures += 1
                raise UpstreamError(f"upstream {self.name} answered without an answer: {problem}",
                                    backend=self.name, kind="protocol")
            return UpstreamResponse(orjson.dumps(data), data)
        finally:
            self._counters.in_flight -= 1

    async def stream(self, request: UpstreamRequest) -> AsyncIterator[Chunks]:
        self._counters.requests += 1
        self._counters.in_flight += 1
        started = False
        try:
            response = await self._call(request)
            try:
                async for chunk in response:
                    started = True
                    yield [orjson.dumps(_dump(chunk))]  # the SDK hands over one chunk at a time
            except UpstreamError:
                raise
            except Exception as exc:
                self._counters.failures += 1
                raise redacted(_error(self.name, exc, after_first_byte=started), self.spec.api_key) from None
        finally:
            self._counters.in_flight -= 1
