"""litellm's HTTP clients follow redirects (a 307 re-POSTs the prompt, with our key on the same origin,
wherever the provider points); these make them stop, as openai_http does. Two client families: the
OpenAI SDK path (openai, azure and most OpenAI-like providers) takes litellm's process-wide session, the
others a handler of ours per call — only for providers checked to accept one (tests/integration/gateway/
test_litellm_redirects.py runs each against the fake upstream, so a litellm that moves one fails there)."""
from __future__ import annotations

from http.cookiejar import DefaultCookiePolicy
from typing import Any

# Providers whose litellm chat path takes an AsyncHTTPHandler as `client` (checked with litellm 1.110);
# on the OpenAI SDK path a handler breaks the call, so none is passed there. Cohere, Bedrock's invoke,
# Vertex and Gemini build clients of their own that neither reaches: still followed there.
HANDLER_PROVIDERS = frozenset({
    "anthropic", "azure_ai", "databricks", "deepseek", "fireworks_ai", "groq", "hosted_vllm", "huggingface",
    "minimax", "mistral", "ollama", "ollama_chat", "openrouter", "snowflake", "together_ai", "xai",
})


def stop_sdk_redirects(litellm: Any) -> None:
    """litellm's own default client for the OpenAI SDK path, not following redirects, as the session every
    SDK-path call uses (litellm.aclient_session, its documented knob; one per process, kept for its life).
    It keeps no cookies: every SDK-path backend shares it, so a cookie one provider key's answer set must not
    ride along with another key's calls to the same host. A session someone set already is left as it is."""
    if litellm.aclient_session is not None:
        return
    from litellm.llms.openai.common_utils import BaseOpenAILLM

    session = BaseOpenAILLM._get_async_http_client()
    if session is not None:
        session.follow_redirects = False
        session.cookies.jar.set_policy(DefaultCookiePolicy(allowed_domains=()))  # store none
        litellm.aclient_session = session


def provider_of(model: str) -> str:
    """The litellm provider a model string names (`anthropic/claude-…`); bare names are OpenAI's."""
    return model.split("/", 1)[0] if "/" in model else "openai"


def redirect_free_handler(litellm: Any, provider: str, timeout_s: float) -> Any | None:
    """An AsyncHTTPHandler that follows no redirect, for a provider that takes one; else None (also
    before litellm is imported: nothing here imports it)."""
    if litellm is None or provider not in HANDLER_PROVIDERS:
        return None
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

    return AsyncHTTPHandler(timeout=timeout_s, follow_redirects=False)
