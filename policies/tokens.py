"""Prompt token counting with tiktoken (the encoding chosen by the target's model family, from the
files litellm ships); `policies.calibration` maps our count to each engine's own."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import tiktoken

from policies.count_cache import MAX_CHARS, CountCache

Count = Callable[[str], int]  # a text's tokens in one encoding

_O200K_PREFIXES = ("gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "gpt-oss", "ft:gpt-4o")
# OpenAI's published way of counting chat tokens: each message costs its fields' tokens plus 3,
# a `name` one more, and the reply is primed with 3 (<|start|>assistant<|message|>).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_TOKENS = {"low": 85, "high": 765, "auto": 765}  # a 1024×1024 image at high detail costs 765
# From this length a text is counted through tiktoken's token buffer (encode_to_numpy): a list of 1,000
# token ints costs ~10 µs to build and free; below it the buffer's fixed cost (~1 µs) is more than the list's.
_BUFFER_MIN_CHARS = 512


def encoding_name_for(model: str) -> str:
    """o200k_base for gpt-4o / 4.1 / 4.5 / 5 / o-series, cl100k_base for older and non-OpenAI models."""
    name = model.rsplit("/", 1)[-1].lower()
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


class TokenCounter:
    """Counts prompt tokens; encodings load once (call `warm` at start-up: the first load takes ~0.3 s).
    Prompt texts of 1,024+ characters that come back are counted once (policies.count_cache)."""

    def __init__(self, *, cache_chars: int = MAX_CHARS) -> None:
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._cached: dict[str, CountCache] = {}
        self._cache_chars = cache_chars

    def warm(self, names: Iterable[str] = ("o200k_base", "cl100k_base")) -> None:
        for name in names:
            self.encoding(name)

    def encoding(self, name: str) -> tiktoken.Encoding:
        enc = self._encodings.get(name)
        if enc is None:
            enc = self._encodings[name] = tiktoken.get_encoding(name)
        return enc

    def cache(self, name: str) -> CountCache:
        """The encoding's prompt-text counts (counts of texts seen lately, then tiktoken)."""
        cache = self._cached.get(name)
        if cache is None:
            enc = self.encoding(name)
            cache = self._cached[name] = CountCache(partial(_text_tokens, enc), self._cache_chars)
        return cache

    def count_text(self, text: str, encoding: str) -> int:
        """Not cached: completions and other one-off texts would only push prompts out of the cache."""
        return _text_tokens(self.encoding(encoding), text)

    def count_messages(self, messages: Iterable[Mapping[str, Any]], encoding: str) -> int:
        """The chat's tokens. Messages before the last go through the cache (the system prompt and the
        history a chat resends); the last is the new turn, counted directly: looking it up would cost
        hashing it, and keeping it a slot, on every request for the rare resend."""
        messages = messages if isinstance(messages, (list, tuple)) else list(messages)
        cached = self.cache(encoding)
        direct = cached.count
        total = REPLY_PRIMING
        last = len(messages) - 1
        for i, message in enumerate(messages):
            if not isinstance(message, Mapping):  # malformed input is the gateway's 400, not a crash here
                continue
            total += TOKENS_PER_MESSAGE
            count = cached if i < last else direct
            for key, value in message.items():
                if key == "name":
                    total += TOKENS_PER_NAME
                total += _value_tokens(count, value)
        return total

    def count_prompt(self, body: Mapping[str, Any], encoding: str) -> int:
        """Prompt tokens of a chat-completions body (messages, tools) or a completions body (prompt)."""
        if "messages" in body:
            messages = body.get("messages")
            total = self.count_messages(messages if isinstance(messages, list) else (), encoding)
            tools = body.get("tools") or body.get("functions")
            if tools:
                total += self.cache(encoding)(json.dumps(tools, separators=(",", ":")))
            return total
        # A completions prompt is one text, new as a chat's last turn: counted directly.
        return _prompt_tokens(self.cache(encoding).count, body.get("prompt", ""))


def _text_tokens(enc: tiktoken.Encoding, text: str) -> int:
    """len(enc.encode_ordinary(text)): user text that looks like a special token counts as plain text
    (encode_ordinary ≡ encode with no special tokens allowed, nor disallowed — tiktoken's own words)."""
    if len(text) < _BUFFER_MIN_CHARS:
        return len(enc.encode_ordinary(text))
    to_buffer = getattr(enc, "encode_to_numpy", None)  # tiktoken ≥ 0.9
    if to_buffer is None:
        return len(enc.encode_ordinary(text))
    try:
        return len(to_buffer(text, disallowed_special=()))
    except UnicodeEncodeError:  # lone surrogates: encode_ordinary repairs the text as it always did
        return len(enc.encode_ordinary(text))


def _value_tokens(count: Count, value: Any) -> int:
    if isinstance(value, str):
        return count(value)
    if isinstance(value, list):  # content parts, or tool_calls
        return sum(_part_tokens(count, part) for part in value)
    if value is None or isinstance(value, (bool, int, float)):
        return 0
    return count(json.dumps(value, separators=(",", ":")))


def _part_tokens(count: Count, part: Any) -> int:
    if not isinstance(part, Mapping):
        return _value_tokens(count, part)
    kind = part.get("type")
    if kind == "text":
        return count(str(part.get("text", "")))
    if kind == "image_url":
        image = part.get("image_url")
        detail = image.get("detail", "auto") if isinstance(image, Mapping) else "auto"
        # a client's detail may be any JSON (a list would be unhashable): only a known name counts
        return IMAGE_TOKENS.get(detail if isinstance(detail, str) else "auto", IMAGE_TOKENS["auto"])
    if "function" in part:  # an assistant's tool call: its name and JSON arguments
        fn = part["function"] if isinstance(part["function"], Mapping) else {}
        return sum(count(str(fn.get(k, ""))) for k in ("name", "arguments"))
    return count(json.dumps(part, separators=(",", ":")))


def _prompt_tokens(count: Count, prompt: Any) -> int:
    if isinstance(prompt, str):
        return count(prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)  # already token ids
    if isinstance(prompt, list):
        return sum(_prompt_tokens(count, p) for p in prompt)
    return 0
