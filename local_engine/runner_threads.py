"""How many torch CPU threads one engine step uses: small steps (a few decodes) may take fewer.

A step of one or a few tokens is a chain of over a thousand small kernels; with 2 threads each of
its ~150 parallel regions wakes a sleeping peer (passive OpenMP waits), which on shared cores costs
more than the second core gains (docs/benchmarks.md, "Batch-1 decode, round 2"). Larger steps keep
every thread.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# Steps of at most this many tokens count as small (decodes of up to 16 sequences, no prompt chunk).
SMALL_STEP_TOKENS = 16
# Machines of at most this many CPUs are small: the loader sets torch's threads itself there, and small
# steps default to one thread (measured only there).
SMALL_MACHINE_CPUS = 4


@dataclass(frozen=True)
class StepThreads:
    """``full`` threads for a step, ``small`` for one of at most ``max_small_tokens`` tokens."""

    full: int
    small: int
    max_small_tokens: int = SMALL_STEP_TOKENS

    def __post_init__(self) -> None:
        if self.full < 1 or self.small < 1 or self.max_small_tokens < 0:
            raise ValueError(f"step threads must be >= 1 (got full={self.full}, small={self.small})")

    def threads_for(self, num_tokens: int) -> int:
        return self.small if num_tokens <= self.max_small_tokens else self.full


def small_step_threads(setting: int | None, cpus: int) -> int | None:
    """The engine setting -> threads of small steps, None for no switch: the default (None) is 1 on
    machines of at most 4 cores, where it was measured, and no switch on larger ones; 0 is no switch."""
    if setting is None:
        return 1 if cpus <= SMALL_MACHINE_CPUS else None
    return setting or None


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity), else the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def use_threads(num_threads: int) -> None:
    """Set torch's intra-op threads of the calling thread, only when they change (a step's cost)."""
    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
