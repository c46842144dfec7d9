"""One request's life inside the engine: its sampling settings, tokens and KV block table.

Plain Python (no torch): the scheduler, block manager and runner all read and update it.
"""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from local_engine.queue_wait import QueueWait


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens for one request; defaults match the OpenAI API."""

    max_tokens: int = 16
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 means off
    seed: int | None = None  # set: the request's samples are reproducible
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()  # besides the model's EOS ids
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; 0: the chosen token's; k: plus top-k


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class FinishReason(enum.Enum):
    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"


_seq_counter = itertools.count()


@dataclass(eq=False)
class Sequence:
    """A request being served; mutated by the scheduler (status, blocks) and the engine (tokens)."""

    prompt_token_ids: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    priority: int = 0  # lower runs first; ties by arrival
    arrival_time: float = 0.0
    request_id: str = ""
    seq_id: int = field(default_factory=lambda: next(_seq_counter))
    token_ids: list[int] = field(init=False)  # prompt + generated so far
    num_cached_tokens: int = 0  # leading tokens whose K/V is already in the cache
    block_table: list[int] = field(default_factory=list)  # physical block ids, in order
    first_scheduled_ns: int = 0  # unix ns of the first step that computed it (0: still queued); for spans
    block_hashes: list[bytes] = field(default_factory=list)  # prefix-cache keys of leading full computed blocks
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: FinishReason | None = None
    num_preemptions: int = 0
    num_prefix_hit_tokens: int | None = None  # prompt tokens found in the prefix cache when first admitted
    queue_mark: tuple[int, int, int, int] | None = None  # the step loop's counters when it took it in (queue_wait)
    queue_wait: QueueWait | None = None  # set at its first step; for spans
    # Prefix-cache keys of its leading full blocks, hashed once (tokens are only ever appended).
    block_key_memo: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_completion_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def completion_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids):]

    @property
    def last_token_id(self) -> int:
        return self.token_ids[-1]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def num_blocks_needed(self, block_size: int) -> int:
        return (self.num_tokens + block_size - 1) // block_size

    def append_token(self, token_id: int) -> None:
        self.token_ids.append(token_id)
