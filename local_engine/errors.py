"""The engine's own exceptions; the server maps each to an OpenAI-shaped error and a status."""
from __future__ import annotations


class EngineError(Exception):
    """Base of everything the engine refuses or fails with."""


class RequestTooLarge(EngineError):
    """A request that can never run: longer than the context, or more KV blocks than the whole pool."""

    def __init__(self, *, num_prompt_tokens: int, max_tokens: int, max_model_len: int,
                 num_blocks_needed: int, num_blocks_total: int, block_size: int) -> None:
        self.num_prompt_tokens = num_prompt_tokens
        self.max_tokens = max_tokens
        self.max_model_len = max_model_len
        self.num_blocks_needed = num_blocks_needed
        self.num_blocks_total = num_blocks_total
        self.block_size = block_size
        total = num_prompt_tokens + max_tokens
        if total > max_model_len:
            message = (
                f"This model's maximum context length is {max_model_len} tokens. However, you requested "
                f"{total} tokens ({num_prompt_tokens} in the messages, {max_tokens} in the completion). "
                "Please reduce the length of the messages or completion."
            )
        else:
            message = (
                f"This request needs {num_blocks_needed} KV blocks of {block_size} tokens "
                f"({num_prompt_tokens} prompt + {max_tokens} completion tokens) but the engine's whole "
                f"KV pool has {num_blocks_total} blocks."
            )
        super().__init__(message)


class EngineFull(EngineError):
    """The waiting queue is at its limit; the client should retry after ``retry_after_s``."""

    def __init__(self, num_waiting: int, max_waiting: int, retry_after_s: int = 1) -> None:
        self.num_waiting = num_waiting
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        super().__init__(
            f"The engine's queue is full ({num_waiting} waiting requests, limit {max_waiting}); "
            f"retry after {retry_after_s} s."
        )


class EngineDead(EngineError):
    """The step loop stopped (a failure in the model runner, or shutdown); no request can be served."""
