"""The body the gateway sends upstream: the client's body cut to OpenAI's request fields for its
endpoint (plus the extras the policy allows that backend), with the policy's own fields added.
Pure. The client's body never configures a backend: what is not on the list is dropped."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.backend_kinds import GUIDED_FIELDS
from policies.compiled import CompiledPolicy

# OpenAI's API reference, request fields that shape the answer. Left out on purpose, as fields
# that bill, store or configure on the operator's account: service_tier, store, metadata (the
# gateway reads it as tags), web_search_options; and everything litellm reads as its own settings.
CHAT_FIELDS = frozenset({
    "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop", "seed",
    "stream", "stream_options", "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call",
    "response_format", "logprobs", "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty",
    "user", "reasoning_effort", "verbosity", "modalities", "audio", "prediction", "prompt_cache_key",
    "safety_identifier",
})
COMPLETION_FIELDS = frozenset({
    "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed", "stream", "stream_options",
    "logprobs", "logit_bias", "presence_penalty", "frequency_penalty", "user", "best_of", "echo", "suffix",
})
EMBEDDING_FIELDS = frozenset({"input", "dimensions", "encoding_format", "user"})
FIELDS_BY_PATH: Mapping[str, frozenset[str]] = {
    "chat/completions": CHAT_FIELDS, "completions": COMPLETION_FIELDS, "embeddings": EMBEDDING_FIELDS,
}
_OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens")


@dataclass(frozen=True)
class BodyRules:
    """What one backend takes beyond the allow-list, and what the policy adds to each request."""

    extra_fields: frozenset[str] = frozenset()  # operator-allowed extras (never model or priority)
    default_max_tokens: int | None = None  # sent when the client sets no max_tokens
    priority: int | None = None  # the team's, for engine backends only


@dataclass(frozen=True)
class UpstreamBody:
    body: dict[str, Any]
    dropped: tuple[str, ...]  # the client's field names left out, sorted (for the debug log)


def rules_for(compiled: CompiledPolicy, backend: str, team: str) -> BodyRules:
    """The rules of one backend of this policy for one team (none for a backend it no longer names)."""
    spec = compiled.policy.backends.get(backend)
    if spec is None:
        return BodyRules()
    priority = compiled.team(team).priority if backend in compiled.engines else None
    extras = spec.body_extras
    if spec.state_source == "hybridgw":  # our engine however named: guided_* reach it to be refused (a 400
        extras = extras.union(GUIDED_FIELDS)  # naming the field), never dropped on the way into free text (README)
    return BodyRules(extras, spec.max_tokens_default, priority)


def build(path: str, body: Mapping[str, Any], model: str, rules: BodyRules, *, stream: bool) -> UpstreamBody:
    """The upstream body for `path` ("chat/completions", "completions", "embeddings")."""
    allowed = FIELDS_BY_PATH[path] | (rules.extra_fields - {"model", "priority"})
    out = {k: v for k, v in body.items() if k in allowed}
    dropped = tuple(sorted(k for k in body if k not in allowed and k != "model"))
    out["model"] = model
    if stream:
        # Ask for usage even when the client did not (StreamTally strips it again); nothing else of the
        # client's stream_options goes on (e.g. vLLM's continuous_usage_stats: usage in every chunk).
        out["stream_options"] = {"include_usage": True}
    if rules.default_max_tokens is not None and path != "embeddings" and not any(
            out.get(name) is not None for name in _OUTPUT_LIMITS):
        out["max_tokens"] = rules.default_max_tokens
    if rules.priority is not None:
        out["priority"] = rules.priority
    return UpstreamBody(out, dropped)
