"""Prompt token counting with tiktoken (the encoding chosen by the target's model family, from the
files litellm ships); `policies.calibration` maps our count to each engine's own."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import tiktoken

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
    """Counts prompt tokens; encodings load once (call `warm` at start-up: the first load takes ~0.3 s)."""

    def __init__(self) -> None:
        self._encodings: dict[str, tiktoken.Encoding] = {}

    def warm(self, names: Iterable[str] = ("o200k_base", "cl100k_base")) -> None:
        for name in names:
            self.encoding(name)

    def encoding(self, name: str) -> tiktoken.Encoding:
        enc = self._encodings.get(name)
        if enc is None:
            enc = self._encodings[name] = tiktoken.get_encoding(name)
        return enc

    def count_text(self, text: str, encoding: str) -> int:
        return _text_tokens(self.encoding(encoding), text)

    def count_messages(self, messages: Iterable[Mapping[str, Any]], encoding: str) -> int:
        enc = self.encoding(encoding)
        total = REPLY_PRIMING
        for message in messages:
            if not isinstance(message, Mapping):  # malformed input is the gateway's 400, not a crash here
                continue
            total += TOKENS_PER_MESSAGE
            for key, value in message.items():
                if key == "name":
                    total += TOKENS_PER_NAME
                total += _value_tokens(enc, value)
        return total

    def count_prompt(self, body: Mapping[str, Any], encoding: str) -> int:
        """Prompt tokens of a chat-completions body (messages, tools) or a completions body (prompt)."""
        if "messages" in body:
            messages = body.get("messages")
            total = self.count_messages(messages if isinstance(messages, list) else (), encoding)
            tools = body.get("tools") or body.get("functions")
            if tools:
                total += self.count_text(json.dumps(tools, separators=(",", ":")), encoding)
            return total
        return _prompt_tokens(self.encoding(encoding), body.get("prompt", ""))


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


def _value_tokens(enc: tiktoken.Encoding, value: Any) -> int:
    if isinstance(value, str):
        return _text_tokens(enc, value)
    if isinstance(value, list):  # content parts, or tool_calls
        return sum(_part_tokens(enc, part) for part in value)
    if value is None or isinstance(value, (bool, int, float)):
        return 0
    return _text_tokens(enc, json.dumps(value, separators=(",", ":")))


def _part_tokens(enc: tiktoken.Encoding, part: Any) -> int:
    if not isinstance(part, Mapping):
        return _value_tokens(enc, part)
    kind = part.get("type")
    if kind == "text":
        return _text_tokens(enc, str(part.get("text", "")))
    if kind == "image_url":
        image = part.get("image_url")
        detail = image.get("detail", "auto") if isinstance(image, Mapping) else "auto"
        return IMAGE_TOKENS.get(detail, IMAGE_TOKENS["auto"])
    if "function" in part:  # an assistant's tool call: its name and JSON arguments
        fn = part["function"] if isinstance(part["function"], Mapping) else {}
        return sum(_text_tokens(enc, str(fn.get(k, ""))) for k in ("name", "arguments"))
    return _text_tokens(enc, json.dumps(part, separators=(",", ":")))


def _prompt_tokens(enc: tiktoken.Encoding, prompt: Any) -> int:
    if isinstance(prompt, str):
        return _text_tokens(enc, prompt)
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return len(prompt)  # already token ids
    if isinstance(prompt, list):
        return sum(_prompt_tokens(enc, p) for p in prompt)
    return 0
