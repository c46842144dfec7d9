"""The one plain value the scheduler hands to the model runner each step (no torch here)."""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

from local_engine.sequence import Sequence


@dataclass(frozen=True)
class ScheduledBatch:
    """What to compute in one engine step.

    For each sequence the runner computes the tokens
    ``seq.token_ids[seq.num_cached_tokens : seq.num_cached_tokens + n]`` with ``n`` its entry in
    ``num_scheduled_tokens``, writes their K/V into the slots that ``seq.block_table`` gives,
    and — when that reaches the end of ``seq.token_ids`` — samples the next token. The first
    ``num_decodes`` sequences are decodes (one token each, at their last token); the rest are
    (possibly chunked) prefills. A step may hold both (vLLM v1's mixed steps).
    """

    seqs: tuple[Sequence, ...]  # in batch order: decodes first, then prefills
    num_scheduled_tokens: tuple[int, ...]  # tokens computed per sequence this step
    _: KW_ONLY
    num_decodes: int = 0  # the leading sequences that decode one token each
    preempted_seq_ids: tuple[int, ...] = ()  # sequences pushed back to waiting this step

    @property
    def num_seqs(self) -> int:
        return len(self.seqs)

    @property
    def total_tokens(self) -> int:
        return sum(self.num_scheduled_tokens)

    @property
    def is_prefill(self) -> bool:
        """Only prefills in this step."""
        return self.num_decodes == 0

    @property
    def is_decode(self) -> bool:
        """Only decodes in this step."""
        return self.num_decodes == len(self.seqs)

    @property
    def num_prefill_tokens(self) -> int:
        return sum(self.num_scheduled_tokens[self.num_decodes:])

    def parts(self) -> tuple[ScheduledBatch, ...]:
        """The decode part, then the prefill part (each only when not empty); a pure batch is itself."""
        if self.is_prefill or self.is_decode:
            return (self,)
        d = self.num_decodes
        return (ScheduledBatch(self.seqs[:d], self.num_scheduled_tokens[:d], num_decodes=d),
                ScheduledBatch(self.seqs[d:], self.num_scheduled_tokens[d:]))

    def samples(self, index: int) -> bool:
        """Whether this step ends at the sequence's last token, so a new token is sampled."""
        seq = self.seqs[index]
        return seq.num_cached_tokens + self.num_scheduled_tokens[index] == seq.num_tokens
