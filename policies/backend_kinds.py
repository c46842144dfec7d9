"""Backend kinds, registered in one place: what a kind's policy entry needs, what it defaults to,
whether it is a local engine the gateway spawns and polls, how usage and traces name its provider,
and which gateway adapter serves it (named as "module:Class" and imported only when a backend of that
kind is built: litellm's pulls seconds of imports). Add a kind: an adapter module + one line below."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

# vLLM's constrained-output fields: `hybridgw engine` reads them only to refuse them with a 400 naming the
# field (local_engine/protocol.py; tests keep the lists equal), so they reach it rather than being dropped
# into free text the client did not ask for.
GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs")
ENGINE_EXTRA_FIELDS = frozenset({"top_k", "ignore_eos", "stop_token_ids", *GUIDED_FIELDS})  # what it reads
ENGINE_DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class BackendKind:
    adapter: str  # "module:Class" of the gateway's Backend for this kind; called with a ResolvedBackend
    provider: str  # gen_ai.provider.name of its usage records and spans
    provider_from_model: bool = False  # the backend's `model` (litellm's provider prefix) names the provider
    needs_base_url: bool = False  # a policy entry without base_url / base_url_env is an error
    spawns: bool = False  # without base_url `hybridgw serve` runs one (an engine); with it, one runs elsewhere
    default_state: str = "none"  # how its live state is polled unless the entry says (`state:`)
    body_extras: frozenset[str] = frozenset()  # request fields beyond OpenAI's it takes by default
    default_max_tokens: int | None = None  # max_tokens sent when the client sets none (None: the provider's)
    # It can constrain output (response_format json_*, guided_*): requests asking for it pass it over.
    structured_output: bool = True

    def provider_name(self, model: str | None) -> str:
        return (model or self.provider) if self.provider_from_model else self.provider

    def base_url_problem(self, kind: str, base_url: str | None) -> str | None:
        """Why a backend of this kind cannot be used with this base URL (None: it can)."""
        return f"a backend of kind {kind} needs base_url" if self.needs_base_url and not base_url else None


_OPENAI_HTTP = "gateway.backends.openai_http:OpenAIHTTPBackend"

BACKEND_KINDS: Mapping[str, BackendKind] = MappingProxyType({
    # Any OpenAI-compatible HTTP server (OpenAI, vLLM, SGLang, TRT-LLM, NIM, an engine run elsewhere).
    "openai": BackendKind(_OPENAI_HTTP, "openai", needs_base_url=True),
    # A provider litellm speaks to (Anthropic, Bedrock, Vertex, …); `model` is its provider prefix.
    "litellm": BackendKind("gateway.backends.litellm_backend:LiteLLMBackend", "litellm",
                           provider_from_model=True),
    # Our engine (it speaks OpenAI's wire format), spawned and supervised by `hybridgw serve`.
    "engine": BackendKind(_OPENAI_HTTP, "hybridgw.engine", spawns=True, default_state="hybridgw",
                          body_extras=ENGINE_EXTRA_FIELDS, default_max_tokens=ENGINE_DEFAULT_MAX_TOKENS,
                          structured_output=False),
})
