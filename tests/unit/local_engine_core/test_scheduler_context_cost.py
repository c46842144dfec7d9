"""Scheduler: while decodes run, a prompt chunk costs its tokens times 1 + context/K, so chunks late in a
long prompt get smaller (a chunk's attention reads its whole context); idle steps count tokens only."""
from __future__ import annotations

import pytest

from local_engine.config import ConfigError, EngineConfig
from local_engine.scheduler import Scheduler, _Step
from tests.unit.local_engine_core.test_scheduler import advance, make, seq_of


def chunks_beside_a_decode(sched: Scheduler, prompt_tokens: int) -> list[int]:
    """Start one decoding sequence, then add a long prompt; its chunk per step until it is prefilled."""
    a = seq_of(3, max_tokens=1000)
    sched.add(a)
    advance(sched.schedule())  # a prefilled: from now on it decodes every step
    b = seq_of(prompt_tokens)
    sched.add(b)
    chunks = []
    while b.num_cached_tokens < b.num_prompt_tokens:
        batch = sched.schedule()
        assert batch.seqs[0] is a and batch.num_decodes == 1
        chunks.append(batch.num_scheduled_tokens[1])
        advance(batch)
    return chunks


def test_chunks_shrink_as_the_context_grows() -> None:
    sched = make(max_num_batched_tokens=20, max_num_seqs=4, context_cost_tokens=10)
    chunks = chunks_beside_a_decode(sched, 60)
    # budget 19 beside the decode; a token at context c costs 1 + c/10: 19 at 0, int(19 / 2.9) at 19, ...
    assert chunks[:4] == [19, 6, 5, 4]
    assert chunks == sorted(chunks, reverse=True) and sum(chunks) == 60
    assert chunks[-1] >= 1  # a step always makes progress, however long the context


def test_each_step_keeps_within_the_budget_in_cost() -> None:
    sched = make(max_num_batched_tokens=20, max_num_seqs=4, context_cost_tokens=10)
    done = 0
    for n in chunks_beside_a_decode(sched, 60):
        if n > 1:  # one token always goes, even when it alone costs more than the budget
            assert 1 + n * (1 + done / 10) <= 20 + 1  # the decode, then the chunk (cost rounded up)
        done += n


def test_without_a_context_cost_chunks_are_the_token_budget() -> None:
    sched = make(max_num_batched_tokens=20, max_num_seqs=4, context_cost_tokens=0)
    assert chunks_beside_a_decode(sched, 60) == [19, 19, 19, 3]


def test_an_idle_step_counts_tokens_only() -> None:
    """Nobody decodes, nobody is stalled: the prompt prefills at the token budget whatever its context."""
    sched = make(max_num_batched_tokens=8, max_idle_batched_tokens=8, max_num_seqs=4, context_cost_tokens=2)
    a = seq_of(19)
    sched.add(a)
    counts = []
    while a.num_cached_tokens < a.num_prompt_tokens:
        batch = sched.schedule()
        counts.append(batch.num_scheduled_tokens[0])
        advance(batch)
    assert counts == [8, 8, 3]


def test_a_removed_chunk_gives_its_cost_back() -> None:
    """A sequence preempted after it was scheduled returns what it took, cost and not tokens."""
    step = _Step(20)
    seq = seq_of(10)
    step.add(seq, 4, decode=False, cost=12)
    assert step.budget == 8
    step.remove(seq)
    assert step.budget == 20 and step.prefills == []


def test_off_by_default_so_chunks_are_the_token_budget() -> None:
    assert EngineConfig().context_cost_tokens == 0
    sched = make(max_num_batched_tokens=20, max_num_seqs=4)
    assert chunks_beside_a_decode(sched, 60) == [19, 19, 19, 3]
    with pytest.raises(ConfigError, match="context_cost_tokens"):
        EngineConfig(context_cost_tokens=-1)


def test_the_engine_cli_sets_the_context_cost() -> None:
    from local_engine.cli import config_from_args, parse_args

    assert config_from_args(parse_args([])).context_cost_tokens == 0
    assert config_from_args(parse_args(["--context-cost-tokens", "1500"])).context_cost_tokens == 1500
