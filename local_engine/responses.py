"""OpenAI response bodies and stream chunks (plain dicts, JSON-encoded once), and SSE framing."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

SSE_DONE = b"data: [DONE]\n\n"


class TokenNames(Protocol):
    """How logprobs name a token (local_engine.tokenizer.Tokenizer is one)."""

    def token_text(self, token_id: int) -> str: ...

    def token_bytes(self, token_id: int) -> bytes: ...


def sse(payload: dict[str, Any]) -> bytes:
    # orjson: one SSE event per token per stream is the server's hottest path.
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def usage(num_prompt_tokens: int, num_completion_tokens: int, num_cached_tokens: int = 0) -> dict[str, Any]:
    # prompt_tokens_details.cached_tokens as OpenAI (and vLLM) report prefix-cache hits.
    return {"prompt_tokens": num_prompt_tokens, "completion_tokens": num_completion_tokens,
            "total_tokens": num_prompt_tokens + num_completion_tokens,
            "prompt_tokens_details": {"cached_tokens": num_cached_tokens}}


@dataclass(frozen=True)
class ResponseIds:
    """What every chunk of one response repeats."""

    id: str
    created: int
    model: str

    @classmethod
    def new(cls, prefix: str, model: str) -> ResponseIds:
        return cls(f"{prefix}-{uuid.uuid4().hex}", int(time.time()), model)


def chat_completion(ids: ResponseIds, text: str, finish_reason: str | None, usage_: dict[str, Any],
                    logprobs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "id": ids.id, "object": "chat.completion", "created": ids.created, "model": ids.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "logprobs": None if logprobs is None else {"content": logprobs},
                     "finish_reason": finish_reason}],
        "usage": usage_,
    }


def chat_chunk(ids: ResponseIds, delta: dict[str, Any], finish_reason: str | None = None,
               logprobs: list[dict[str, Any]] | None = None, include_usage: bool = False) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": ids.id, "object": "chat.completion.chunk", "created": ids.created, "model": ids.model,
        "choices": [{"index": 0, "delta": delta,
                     "logprobs": None if logprobs is None else {"content": logprobs},
                     "finish_reason": finish_reason}],
    }
    if include_usage:
        chunk["usage"] = None  # as OpenAI: null on every chunk but the last
    return chunk


def chat_usage_chunk(ids: ResponseIds, usage_: dict[str, Any]) -> dict[str, Any]:
    return {"id": ids.id, "object": "chat.completion.chunk", "created": ids.created, "model": ids.model,
            "choices": [], "usage": usage_}


def completion(ids: ResponseIds, text: str, finish_reason: str | None, usage_: dict[str, Any],
               logprobs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": ids.id, "object": "text_completion", "created": ids.created, "model": ids.model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
        "usage": usage_,
    }


def completion_chunk(ids: ResponseIds, text: str, finish_reason: str | None = None,
                     logprobs: dict[str, Any] | None = None, include_usage: bool = False) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": ids.id, "object": "text_completion", "created": ids.created, "model": ids.model,
        "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}],
    }
    if include_usage:
        chunk["usage"] = None
    return chunk


def completion_usage_chunk(ids: ResponseIds, usage_: dict[str, Any]) -> dict[str, Any]:
    return {"id": ids.id, "object": "text_completion", "created": ids.created, "model": ids.model,
            "choices": [], "usage": usage_}


def model_list(model: str, created: int, max_model_len: int) -> dict[str, Any]:
    return {"object": "list", "data": [{"id": model, "object": "model", "created": created,
                                        "owned_by": "hybridgw", "max_model_len": max_model_len}]}


def chat_logprobs(entries: list[Any], names: TokenNames) -> list[dict[str, Any]]:
    """Chat's ``logprobs.content``: one item per generated token (entries are the runner's TokenLogprobs).

    ``bytes`` are the token's raw bytes: a token holding part of a UTF-8 character has text U+FFFD,
    yet the bytes of consecutive tokens concatenate to the exact text.
    """
    items = []
    for lp in entries:
        items.append({"token": names.token_text(lp.token_id), "logprob": lp.logprob,
                      "bytes": list(names.token_bytes(lp.token_id)),
                      "top_logprobs": [{"token": names.token_text(tid), "logprob": v,
                                        "bytes": list(names.token_bytes(tid))} for tid, v in lp.top]})
    return items


def completion_logprobs(entries: list[Any], names: TokenNames, offset: int = 0) -> dict[str, Any]:
    """Legacy completions' parallel lists; ``offset`` is the text length before these tokens."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    for lp in entries:
        text = names.token_text(lp.token_id)
        tokens.append(text)
        token_logprobs.append(lp.logprob)
        top.append({names.token_text(tid): v for tid, v in lp.top} if lp.top else None)
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}
