"""The engine's fixed limits and the admission checks made from them (pure; no torch, no I/O).

Both sides of a split engine use it: the server checks a request before queueing it, the step
loop again when it adds it.
"""
from __future__ import annotations

from dataclasses import dataclass

from local_engine.errors import RequestTooLarge


@dataclass(frozen=True)
class EngineLimits:
    """What a request may ask of this engine: context length and the whole KV pool."""

    max_model_len: int
    block_size: int
    num_blocks_total: int
    max_num_seqs: int
    max_waiting: int

    def num_blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def check_fits(self, num_prompt_tokens: int, max_tokens: int) -> None:
        """Raise RequestTooLarge for a request that could never run, even alone."""
        if num_prompt_tokens < 1 or max_tokens < 1:
            raise ValueError(f"need at least 1 prompt token and max_tokens >= 1, got "
                             f"{num_prompt_tokens} and {max_tokens}")
        # The last sampled token is never fed back, so its K/V needs no slot.
        num_blocks_needed = self.num_blocks_for(num_prompt_tokens + max_tokens - 1)
        if num_prompt_tokens + max_tokens > self.max_model_len or num_blocks_needed > self.num_blocks_total:
            raise RequestTooLarge(
                num_prompt_tokens=num_prompt_tokens, max_tokens=max_tokens, max_model_len=self.max_model_len,
                num_blocks_needed=num_blocks_needed, num_blocks_total=self.num_blocks_total,
                block_size=self.block_size)

    def max_new_tokens(self, num_prompt_tokens: int) -> int:
        """The most tokens a request with this prompt may ask for (the default when it names none)."""
        pool_tokens = self.num_blocks_total * self.block_size
        return min(self.max_model_len - num_prompt_tokens, pool_tokens - num_prompt_tokens + 1)
