"""Every provider the litellm backend hands a redirect-free client (and the OpenAI SDK path, through
litellm's session) is asked by the backend itself against the fake upstream, which answers 307: the call
fails as a redirect — a 502 for the client — and the fake never sees the request re-POSTed elsewhere. A
litellm release that moves a provider to a path where our client breaks or is ignored fails here."""
from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.backends.base import UpstreamRequest
from gateway.backends.litellm_backend import LiteLLMBackend
from gateway.backends.litellm_redirects import HANDLER_PROVIDERS
from gateway.catalog import ResolvedBackend
from gateway.errors import UpstreamError, error_info
from policies.schema import Timeouts


async def _ask_each(fake: str, providers: list[str]) -> dict[str, tuple[str, str]]:
    """provider → (the error the backend raised, the path the fake saw last)."""
    seen: dict[str, tuple[str, str]] = {}
    for provider in providers:
        backend = LiteLLMBackend(ResolvedBackend(f"via-{provider}", "litellm", f"{fake}/v1", "k", provider,
                                                 Timeouts(first_byte_s=10)))
        await backend.open()
        httpx.post(f"{fake}/_reset")
        body = {"model": "m;redirect=/elsewhere", "messages": [{"role": "user", "content": "x"}], "max_tokens": 4}
        try:
            await backend.complete(UpstreamRequest("chat/completions", body, f"redirect-{provider}"))
            outcome = "answered"
        except UpstreamError as exc:
            outcome = f"{error_info(exc).status} {exc.message}"
        finally:
            await backend.aclose()
        seen[provider] = (outcome, (httpx.get(f"{fake}/_last_request").json() or {}).get("path", ""))
    return seen


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # litellm's own, on import
def test_no_provider_follows_a_redirect(fake_upstream: str) -> None:
    providers = ["openai", *sorted(HANDLER_PROVIDERS)]
    seen = asyncio.run(_ask_each(fake_upstream, providers))
    followed = {p: s for p, s in seen.items() if s[1] == "/elsewhere"}
    assert not followed, followed  # on the old backend every one of them re-POSTed the prompt there
    refused = {p: s for p, s in seen.items() if not s[0].startswith("502 ")}
    assert not refused, refused  # each a 502 (a redirect, or what the provider made of the 307)
