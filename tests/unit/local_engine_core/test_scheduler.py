"""Scheduler: join/leave between steps, token budget and chunked prefill, preemption, priority, abort."""
from __future__ import annotations

from local_engine.batch import ScheduledBatch
from local_engine.block_manager import BlockManager
from local_engine.config import EngineConfig
from local_engine.scheduler import Scheduler
from local_engine.sequence import FinishReason, SamplingParams, Sequence, SequenceStatus


def make(num_blocks: int = 64, block_size: int = 4, **kw: object) -> Scheduler:
    kw.setdefault("admission_watermark", 0.0)
    config = EngineConfig(block_size=block_size, **kw)  # type: ignore[arg-type]
    return Scheduler(config, BlockManager(num_blocks, block_size, enable_prefix_caching=False))


def seq_of(n: int, priority: int = 0, max_tokens: int = 100) -> Sequence:
    return Sequence(list(range(1, n + 1)), SamplingParams(max_tokens=max_tokens), priority=priority)


def advance(batch: ScheduledBatch, token: int = 7) -> None:
    """What the engine loop does after the runner: count computed tokens, append sampled ones."""
    for i, seq in enumerate(batch.seqs):
        samples = batch.samples(i)
        seq.num_cached_tokens += batch.num_scheduled_tokens[i]
        if samples:
            seq.append_token(token)


def test_new_request_prefills_then_decodes() -> None:
    sched = make()
    a = seq_of(5)
    sched.add(a)
    batch = sched.schedule()
    assert batch is not None and batch.is_prefill
    assert batch.seqs == (a,) and batch.num_scheduled_tokens == (5,) and batch.samples(0)
    advance(batch)
    batch = sched.schedule()
    assert batch is not None and not batch.is_prefill
    assert batch.seqs == (a,) and batch.num_scheduled_tokens == (1,)
    assert len(a.block_table) == 2  # token 6 at position 5 crossed into block 2 (size 4)


def test_request_joins_running_batch_at_next_step_and_leaves_at_once() -> None:
    sched = make()
    a, b = seq_of(3), seq_of(4)
    sched.add(a)
    advance(sched.schedule())  # a prefilled
    advance(sched.schedule())  # a decodes
    sched.add(b)
    batch = sched.schedule()  # a mixed step: a decodes while b joins
    assert batch.seqs == (a, b) and batch.num_scheduled_tokens == (1, 4) and batch.num_decodes == 1
    advance(batch)
    batch = sched.schedule()
    assert batch.is_decode and batch.seqs == (a, b)
    advance(batch)
    sched.finish(a, FinishReason.STOP)
    assert a.status is SequenceStatus.FINISHED and a.block_table == []
    batch = sched.schedule()
    assert batch.seqs == (b,)


def test_long_prompt_is_prefilled_in_chunks_under_the_budget() -> None:
    sched = make(max_num_batched_tokens=8, max_idle_batched_tokens=8, max_num_seqs=4)
    a = seq_of(19)
    sched.add(a)
    counts = []
    while True:
        batch = sched.schedule()
        assert batch.total_tokens <= 8
        counts.append(batch.num_scheduled_tokens[0])
        sampled = batch.samples(0)
        advance(batch)
        if sampled:
            break
    assert counts == [8, 8, 3]
    assert a.num_completion_tokens == 1


def test_budget_is_shared_by_several_new_prompts() -> None:
    sched = make(max_num_batched_tokens=10, max_idle_batched_tokens=10, max_num_seqs=4)
    a, b, c = seq_of(6), seq_of(6), seq_of(6)
    for s in (a, b, c):
        sched.add(s)
    batch = sched.schedule()
    assert batch.seqs == (a, b) and batch.num_scheduled_tokens == (6, 4)
    assert batch.samples(0) and not batch.samples(1)
    advance(batch)
    batch = sched.schedule()  # a's decode first, then b's rest, then c
    assert batch.seqs == (a, b, c) and batch.num_scheduled_tokens == (1, 2, 6) and batch.num_decodes == 1


def test_running_streams_decode_in_every_step_while_a_long_prompt_is_chunked() -> None:
    sched = make(max_num_batched_tokens=8, max_num_seqs=4)
    running = [seq_of(2), seq_of(2), seq_of(2)]
    for s in running:
        sched.add(s)
    advance(sched.schedule())
    long = seq_of(30)
    sched.add(long)
    chunks = []
    while long.num_completion_tokens == 0:
        batch = sched.schedule()
        assert batch.seqs[:3] == tuple(running) and batch.num_decodes == 3  # no step leaves them out
        assert batch.num_scheduled_tokens[:3] == (1, 1, 1) and batch.total_tokens <= 8
        assert batch.seqs[3:] == (long,) and [p.num_decodes for p in batch.parts()] == [3, 0]
        chunks.append(batch.num_scheduled_tokens[3])
        advance(batch)
    assert chunks == [5, 5, 5, 5, 5, 5] and all(s.num_completion_tokens == 7 for s in running)
    assert sched.schedule().is_decode


def test_an_idle_engine_starts_a_burst_at_once_then_the_budget_bounds_prefill() -> None:
    sched = make(max_num_batched_tokens=8, max_idle_batched_tokens=64, max_num_seqs=8)
    burst = [seq_of(10) for _ in range(4)]
    for s in burst:
        sched.add(s)
    batch = sched.schedule()  # nothing decodes yet: nobody to stall
    assert batch.seqs == tuple(burst) and batch.num_scheduled_tokens == (10,) * 4
    advance(batch)
    late = seq_of(10)
    sched.add(late)
    batch = sched.schedule()
    assert batch.seqs == (*burst, late) and batch.num_scheduled_tokens == (1, 1, 1, 1, 4)


def test_priority_preemption_takes_a_decode_out_of_the_step_being_built() -> None:
    sched = make(num_blocks=3, block_size=4, enable_priority=True, max_num_batched_tokens=64)
    keep, low = seq_of(3, priority=1), seq_of(3, priority=5)
    sched.add(keep)
    sched.add(low)
    advance(sched.schedule())  # both prefilled, one block each, one block free
    high = seq_of(8, priority=0)  # needs two blocks: low gives way
    sched.add(high)
    batch = sched.schedule()
    assert batch.seqs == (keep, high) and batch.num_decodes == 1 and batch.num_scheduled_tokens == (1, 8)
    assert batch.preempted_seq_ids == (low.seq_id,) and low.status is SequenceStatus.WAITING


def test_max_num_seqs_caps_the_running_set() -> None:
    sched = make(max_num_seqs=2, max_num_batched_tokens=64)
    seqs = [seq_of(3) for _ in range(3)]
    for s in seqs:
        sched.add(s)
    batch = sched.schedule()
    assert batch.seqs == tuple(seqs[:2])
    assert sched.waiting == [seqs[2]]


def test_preemption_when_blocks_run_out_frees_and_requeues_the_newest() -> None:
    sched = make(num_blocks=4, block_size=4)
    a, b = seq_of(8), seq_of(8)
    sched.add(a)
    sched.add(b)
    advance(sched.schedule())  # both prefilled: 2 blocks each, pool empty
    assert sched.block_manager.num_free_blocks == 0
    batch = sched.schedule()  # both need a 3rd block: b gives way
    assert not batch.is_prefill and batch.seqs == (a,)
    assert batch.preempted_seq_ids == (b.seq_id,)
    assert b.status is SequenceStatus.WAITING and b.block_table == [] and b.num_cached_tokens == 0
    assert b.num_preemptions == 1 and sched.num_preemptions == 1
    assert sched.waiting == [b]


def test_preempted_sequence_recomputes_prompt_and_generated_tokens() -> None:
    sched = make(num_blocks=4, block_size=4)
    a, b = seq_of(8, max_tokens=3), seq_of(8)
    sched.add(a)
    sched.add(b)
    advance(sched.schedule(), token=70)
    advance(sched.schedule())  # b preempted (it holds 9 tokens now)
    sched.finish(a, FinishReason.LENGTH)
    batch = sched.schedule()
    assert batch.is_prefill and batch.seqs == (b,) and batch.num_scheduled_tokens == (9,)


def test_a_lone_sequence_preempts_itself_never_fails() -> None:
    sched = make(num_blocks=2, block_size=4)
    a = seq_of(8)
    sched.add(a)
    advance(sched.schedule())
    batch = sched.schedule()  # needs a 3rd block, there is none: it goes back to waiting
    assert batch is None
    assert a.status is SequenceStatus.WAITING and sched.num_preemptions == 1


def test_priority_orders_admission_when_enabled() -> None:
    sched = make(enable_priority=True, max_num_seqs=1)
    low, high = seq_of(3, priority=5), seq_of(3, priority=1)
    sched.add(low)
    sched.add(high)
    assert sched.schedule().seqs == (high,)


def test_fcfs_ignores_priority_when_disabled() -> None:
    sched = make(enable_priority=False, max_num_seqs=1)
    low, high = seq_of(3, priority=5), seq_of(3, priority=1)
    sched.add(low)
    sched.add(high)
    assert sched.schedule().seqs == (low,)


def test_high_priority_request_preempts_a_lower_priority_running_one() -> None:
    sched = make(num_blocks=2, block_size=4, enable_priority=True)
    low = seq_of(8, priority=5)
    sched.add(low)
    advance(sched.schedule())
    high = seq_of(4, priority=0)
    sched.add(high)
    batch = sched.schedule()
    assert batch.is_prefill and batch.seqs == (high,)
    assert batch.preempted_seq_ids == (low.seq_id,)


def test_abort_frees_blocks_of_running_and_removes_waiting() -> None:
    sched = make(num_blocks=8, max_num_seqs=1)
    a, b = seq_of(8), seq_of(8)
    sched.add(a)
    sched.add(b)
    advance(sched.schedule())
    assert sched.block_manager.num_free_blocks == 6
    sched.finish(a, FinishReason.ABORT)
    sched.finish(b, FinishReason.ABORT)
    assert sched.block_manager.num_free_blocks == 8
    assert not sched.has_work() and sched.schedule() is None
    assert a.finish_reason is FinishReason.ABORT and b.status is SequenceStatus.FINISHED


def test_head_of_line_waits_rather_than_being_overtaken() -> None:
    sched = make(num_blocks=3, block_size=4)
    a, big, small = seq_of(4), seq_of(12), seq_of(2)
    for s in (a, big, small):
        sched.add(s)
    batch = sched.schedule()
    assert batch.seqs == (a,)  # big does not fit next to a; small waits behind it
    assert sched.waiting == [big, small]


def make_cached(num_blocks: int = 64, block_size: int = 4, **kw: object) -> Scheduler:
    config = EngineConfig(block_size=block_size, admission_watermark=0.0, **kw)  # type: ignore[arg-type]
    return Scheduler(config, BlockManager(num_blocks, block_size, enable_prefix_caching=True))


def finish_step(sched: Scheduler, batch: ScheduledBatch) -> None:
    """advance() plus what the engine does next: register newly computed full blocks."""
    advance(batch)
    for seq in batch.seqs:
        sched.block_manager.cache_full_blocks(seq)


def test_same_prefix_waits_one_step_then_reuses_the_cached_blocks() -> None:
    sched = make_cached()
    first, second, other = seq_of(10), seq_of(10), Sequence([9] * 10)
    for s in (first, second, other):
        sched.add(s)
    batch = sched.schedule()
    assert batch.seqs == (first,)  # second shares first's blocks being computed; other waits behind it
    finish_step(sched, batch)
    batch = sched.schedule()
    assert batch.seqs == (first, second, other) and batch.num_decodes == 1
    assert second.num_cached_tokens == 8 and batch.num_scheduled_tokens == (1, 2, 10)
    assert sched.block_manager.prefix_cache_hit_rate > 0


def test_prompts_shorter_than_a_block_are_never_held_back() -> None:
    sched = make_cached()
    a, b = seq_of(3), seq_of(3)
    sched.add(a)
    sched.add(b)
    assert sched.schedule().seqs == (a, b)


def test_a_full_batch_of_decodes_leaves_the_default_prefill_budget_to_new_prompts() -> None:
    sched = make(num_blocks=400, max_num_seqs=65)  # default budget: max(64, 65) = 65 tokens
    running = [seq_of(2) for _ in range(64)]
    for s in running:
        sched.add(s)
    advance(sched.schedule())  # all 64 prefilled in one idle step
    new = seq_of(40)
    sched.add(new)
    batch = sched.schedule()
    assert batch.num_decodes == 64 and batch.seqs[64:] == (new,)
    assert batch.num_scheduled_tokens[64:] == (40,)  # not the 1 token the decodes left of the budget


def test_an_explicit_budget_still_bounds_decodes_and_prompts_together() -> None:
    sched = make(num_blocks=400, max_num_seqs=65, max_num_batched_tokens=65)
    for s in [seq_of(2) for _ in range(64)]:
        sched.add(s)
    advance(sched.schedule())
    sched.add(seq_of(40))
    batch = sched.schedule()
    assert batch.total_tokens == 65

