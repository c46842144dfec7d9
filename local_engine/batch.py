"""The one plain value the scheduler hands to the model runner each step (no torch here)."""
from __future__ import annotations

from dataclasses import dataclass

from local_engine.sequence import Sequence


@dataclass(frozen=True)
class ScheduledBatch:
    """What to compute in one engine step.

    For each sequence the runner computes the tokens
    ``seq.token_ids[seq.num_cached_tokens : seq.num_cached_tokens + n]`` with ``n`` its entry in
    ``num_scheduled_tokens``, writes their K/V into the slots that ``seq.block_table`` gives,
    and — when that reaches the end of ``seq.token_ids`` — samples the next token. A decode is
    ``n == 1``; a (possibly chunked) prefill is ``n > 1`` or ends before the last token.
    """

    seqs: tuple[Sequence, ...]  # in batch order
    num_scheduled_tokens: tuple[int, ...]  # tokens computed per sequence this step
    is_prefill: bool  # True: only prefills in this step; False: only decodes (one token each)
    preempted_seq_ids: tuple[int, ...] = ()  # sequences pushed back to waiting this step

    @property
    def num_seqs(self) -> int:
        return len(self.seqs)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_scheduled_tokens)

    def samples(self, index: int) -> bool:
        """Whether this step ends at the sequence's last token, so a new token is sampled."""
        seq = self.seqs[index]
        return seq.num_cached_tokens + self.num_scheduled_tokens[index] == seq.num_tokens
