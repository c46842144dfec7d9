"""How a request waited in the engine, for its span: when the step loop took it in, how many waited ahead,
the steps before its first (and those of them that took no waiting prompt in), the steps its prompt took
and when the step that sampled its first token ended. Differences of two engine-wide step counters."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Protocol


@dataclass(frozen=True)
class QueueWait:
    """One request's wait between the step loop taking it in and the first step that computed it."""

    taken_in_ns: int  # unix ns when the step loop added it to the scheduler's queue
    ahead: int  # requests waiting in the scheduler when it was added
    steps: int  # steps that ran after it was added and before the one that first computed it
    steps_no_admit: int  # of those, steps that took no waiting request in although some waited
    prefill_steps: int = 0  # steps from its first to the one that sampled its first token, both counted
    sampled_ns: int = 0  # unix ns when that step ended in the step loop (before its outputs were sent)
    first_step_decodes: int = 0  # its first step: the sequences decoding in it
    first_step_prompt_tokens: int = 0  # and the prompt tokens it computed, of every sequence in it


class Marked(Protocol):
    queue_mark: tuple[int, int, int, int] | None
    queue_wait: QueueWait | None


class QueueSteps:
    """The engine's step counters; `taken_in` marks a request, `scheduled` turns the mark into its QueueWait."""

    def __init__(self) -> None:
        self.steps = 0
        self.steps_no_admit = 0

    def taken_in(self, seq: Marked, num_waiting: int) -> None:
        seq.queue_mark = (time.time_ns(), num_waiting, self.steps, self.steps_no_admit)

    def scheduled(self, seq: Marked, num_decodes: int, num_prompt_tokens: int) -> None:
        """The first step that computes `seq` is being built (before `stepped` counts it)."""
        mark = seq.queue_mark
        if mark is not None and seq.queue_wait is None:
            at_ns, ahead, steps, no_admit = mark
            seq.queue_wait = QueueWait(at_ns, ahead, self.steps - steps, self.steps_no_admit - no_admit,
                                       first_step_decodes=num_decodes, first_step_prompt_tokens=num_prompt_tokens)

    def sampled(self, seq: Marked, now_ns: int) -> None:
        """The step that just ran (counted by `stepped`) sampled `seq`'s first token."""
        wait, mark = seq.queue_wait, seq.queue_mark
        if wait is not None and mark is not None and not wait.sampled_ns:
            seq.queue_wait = replace(wait, prefill_steps=self.steps - mark[2] - wait.steps, sampled_ns=now_ns)

    def stepped(self, num_waiting_before: int, num_taken: int) -> None:
        """A step ran: `num_taken` of the `num_waiting_before` waiting requests went into it."""
        self.steps += 1
        if num_waiting_before and not num_taken:
            self.steps_no_admit += 1
