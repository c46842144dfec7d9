"""Decode CUDA graphs: bucket choice and padding (pure), and the static decode step — run eagerly on a
CPU — computing what the ordinary path computes, writing nothing outside the step's own slots."""
from __future__ import annotations

import pytest
import torch

from local_engine.cuda_graphs import DecodeGraphs
from local_engine.graph_buckets import (
    BATCH_BUCKETS,
    GraphKey,
    context_buckets,
    graph_key,
    pad_decode,
    smallest_fit,
)
from local_engine.kv_quant import FP8_DTYPE
from local_engine.runner import ModelRunner, RunnerError
from local_engine.sequence import Sequence
from tests.unit.local_engine.helpers import BlockPool, greedy, step, tiny_model

BS = 4


def test_buckets_pick_the_smallest_that_holds_the_step() -> None:
    assert [smallest_fit(n, BATCH_BUCKETS) for n in (1, 3, 8, 9, 65, 256, 257)] == [1, 4, 8, 16, 96, 256, None]
    assert context_buckets(512) == (16, 32, 64, 128, 256, 512)
    assert context_buckets(100) == (16, 32, 64, 100) and context_buckets(8) == (8,)
    kw = {"block_size": 16, "batch_buckets": BATCH_BUCKETS, "width_buckets": context_buckets(512)}
    assert graph_key(5, 17, **kw) == GraphKey(8, 16)  # 17 tokens need 2 blocks: the narrowest width
    assert graph_key(5, 16 * 16 + 1, **kw) == GraphKey(8, 32)
    assert graph_key(300, 10, **kw) is None and graph_key(1, 16 * 512 + 1, **kw) is None


def test_padding_points_every_extra_row_at_the_scratch_block() -> None:
    tables = [[7, 3, 9, 11], [5]]  # the first table holds a block more than its context needs
    p = pad_decode([42, 43], [9, 2], tables, GraphKey(4, 3), block_size=BS, scratch_block=99)
    assert p.input_ids == [42, 43, 0, 0] and p.positions == [9, 2, 0, 0]
    assert p.slot_mapping == [9 * BS + 1, 5 * BS + 2, 99 * BS, 99 * BS]  # position 9: block 2 (id 9), slot 1
    assert p.block_tables == [[7, 3, 9], [5, 99, 99], [99, 99, 99], [99, 99, 99]]
    assert p.context_lens == [10, 3, 1, 1]
    with pytest.raises(ValueError, match="does not fit"):
        pad_decode([1], [12], [[1, 2, 3, 4]], GraphKey(1, 3), block_size=BS, scratch_block=99)
    with pytest.raises(ValueError, match="does not fit"):
        pad_decode([1, 2], [0, 0], [[1], [2]], GraphKey(1, 3), block_size=BS, scratch_block=99)


def test_a_key_keeps_its_static_buffers_and_each_step_refills_them() -> None:
    model = tiny_model()
    runner = ModelRunner(model, model.config, device="cpu", dtype=model.dtype, kv_dtype=None, num_blocks=32,
                         block_size=BS, cuda_graphs=True)
    graphs = runner.graphs
    assert graphs is not None
    with torch.inference_mode():
        graphs.run([11, 12, 13], [5, 0, 9], [[3, 4], [7], [1, 2, 6]])
        step_ = graphs.steps[GraphKey(4, 16)]
        addresses = [t.data_ptr() for t in (step_.input_ids, step_.block_tables, step_.context_lens)]
        logits = graphs.run([21, 22, 23], [6, 1, 10], [[3, 4], [7], [1, 2, 6]])  # the next step, same graph
    assert logits is not None and logits.shape == (3, model.config.vocab_size)
    assert list(graphs.steps) == [GraphKey(4, 16)]
    assert [t.data_ptr() for t in (step_.input_ids, step_.block_tables, step_.context_lens)] == addresses
    assert step_.input_ids.tolist() == [21, 22, 23, 0] and step_.context_lens.tolist() == [7, 2, 11, 1]
    assert step_.slot_mapping.tolist() == [4 * BS + 2, 7 * BS + 1, 6 * BS + 2, 32 * BS]  # 32: the scratch block
    assert step_.block_tables[:, :4].tolist() == [[3, 4, 32, 32], [7, 32, 32, 32], [1, 2, 6, 32], [32] * 4]


def _decode_run(model, graphs: bool, kv_dtype=None, buckets: tuple[int, ...] | None = None):
    """Prefill 5 sequences, decode 16 steps, a sequence joins, 6 steps, one leaves, 6 steps."""
    runner = ModelRunner(model, model.config, device=model.norm.device, dtype=model.dtype, kv_dtype=kv_dtype, num_blocks=96,
                         block_size=BS, cuda_graphs=graphs)
    if kv_dtype is not None:
        runner.calibrate_kv_scales([[5, 9, 100, 7, 300, 41] * 4])
    if buckets is not None and runner.graphs is not None:
        runner.graphs = DecodeGraphs(runner.model, runner.kv_cache, scratch_block=runner.num_blocks,
                                     max_positions=runner.max_positions, device=runner.device, batch_buckets=buckets)
    pool = BlockPool(96, seed=3)
    seqs = [Sequence([7 + i, 40 + 3 * i, 90, 5 * i + 1] * (1 + i), greedy(40)) for i in range(6)]
    step(runner, pool, seqs[:5], [s.num_tokens for s in seqs[:5]], True)
    for _ in range(16):
        step(runner, pool, seqs[:5], [1] * 5, False)
    step(runner, pool, seqs[5:], [seqs[5].num_tokens], True)
    for _ in range(6):
        step(runner, pool, seqs, [1] * 6, False)
    live = seqs[:2] + seqs[3:]
    for _ in range(6):
        step(runner, pool, live, [1] * 5, False)
    return runner, [s.completion_token_ids for s in seqs]


@pytest.mark.parametrize("kv_dtype", [None, FP8_DTYPE], ids=["fp32", "fp8"])
def test_the_static_decode_step_equals_the_ordinary_path(kv_dtype) -> None:
    model = tiny_model()
    eager, want = _decode_run(model, graphs=False, kv_dtype=kv_dtype)
    graphed, got = _decode_run(model, graphs=True, kv_dtype=kv_dtype)
    assert got == want
    assert graphed.graphs is not None and set(graphed.graphs.steps) == {GraphKey(8, 16)}
    assert graphed.kv_cache.tensor.shape[2] == eager.kv_cache.tensor.shape[2] + 1  # the scratch block
    # the pool's real blocks hold the same K/V: padded rows wrote only to the scratch block
    real = slice(0, eager.num_blocks)
    a, b = graphed.kv_cache.tensor[:, :, real], eager.kv_cache.tensor[:, :, real]
    if kv_dtype is not None:
        a, b = a.view(torch.uint8).float(), b.view(torch.uint8).float()
        assert float((a != b).float().mean()) < 0.01  # a last-bit difference moves a code now and then
    else:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_a_step_larger_than_every_graph_runs_eagerly() -> None:
    model = tiny_model()
    _, want = _decode_run(model, graphs=False)
    graphed, got = _decode_run(model, graphs=True, buckets=(1, 2, 4))
    assert got == want
    assert graphed.graphs is not None and graphed.graphs.steps == {}  # 5 and 6 sequences: no graph holds them


def test_a_failed_capture_leaves_every_step_to_the_eager_path() -> None:
    model = tiny_model()
    _, want = _decode_run(model, graphs=False)
    runner = ModelRunner(model, model.config, device="cpu", dtype=model.dtype, kv_dtype=None, num_blocks=96,
                         block_size=BS, cuda_graphs=True)
    assert runner.graphs is not None
    runner.graphs.capture = True  # capturing needs CUDA: on this CPU the capture itself fails
    pool = BlockPool(96, seed=3)
    seqs = [Sequence([7 + i, 40 + 3 * i, 90, 5 * i + 1] * (1 + i), greedy(40)) for i in range(5)]
    step(runner, pool, seqs, [s.num_tokens for s in seqs], True)
    for _ in range(16):
        step(runner, pool, seqs, [1] * 5, False)
    assert runner.graphs.failed and runner.graphs.steps == {}
    assert [s.completion_token_ids for s in seqs] == [w[:17] for w in want[:5]]


def test_graphs_only_replay_the_fast_path() -> None:
    model = tiny_model()
    with pytest.raises(RunnerError, match="fast attention path"):
        ModelRunner(model, model.config, device="cpu", dtype=model.dtype, kv_dtype=None, num_blocks=8, block_size=BS,
                    attention="deterministic", cuda_graphs=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures CUDA graphs")
def test_captured_graphs_replay_what_the_eager_step_computes() -> None:
    cuda_model = tiny_model().to("cuda")
    _, want = _decode_run(cuda_model, graphs=False)
    runner, got = _decode_run(cuda_model, graphs=True)
    assert got == want and runner.graphs is not None and set(runner.graphs.graphs) == {GraphKey(8, 16)}
    assert runner.graphs.failed is None
