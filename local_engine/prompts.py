"""Request prompts to token ids: chat messages through the model's template, completion prompts as text or ids."""
from __future__ import annotations

from typing import Any, Protocol

from local_engine.protocol import ChatCompletionRequest, CompletionRequest, ProtocolError


class PromptTokenizer(Protocol):
    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...

    def apply_chat_template(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True,
                            tools: list[dict[str, Any]] | None = None) -> str: ...


def chat_prompt_ids(tokenizer: PromptTokenizer, messages: list[dict[str, Any]],
                    tools: list[dict[str, Any]] | None = None, add_generation_prompt: bool = True) -> list[int]:
    # The template writes any BOS itself, so no special tokens are added on encode.
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tools=tools)
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ProtocolError("the messages render to an empty prompt", "messages")
    return ids


def chat_request_ids(tokenizer: PromptTokenizer, req: ChatCompletionRequest) -> list[int]:
    return chat_prompt_ids(tokenizer, req.template_messages(), req.tools)


def completion_request_ids(tokenizer: PromptTokenizer, req: CompletionRequest) -> tuple[list[int], str]:
    """(prompt ids, prompt text) for a completion; ids given by the client are checked against the vocab."""
    prompt = req.single_prompt()
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt, add_special_tokens=True)
        if not ids:
            raise ProtocolError("the prompt encodes to no tokens", "prompt")
        return ids, prompt
    vocab = tokenizer.vocab_size
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise ProtocolError(f"token ids out of the vocabulary (0..{vocab - 1}): {bad[:5]}", "prompt")
    return list(prompt), tokenizer.decode(prompt) if req.echo else ""
