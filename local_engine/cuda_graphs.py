"""The decode step as CUDA graphs: one per (padded batch, block-table width), captured the first time a
step needs it and replayed with the step's inputs copied into the graph's static buffers.

A graph replays fixed kernels on fixed addresses, so everything a step varies lives in tensors made
once per graph — token ids, positions, write slots, block tables, context lengths — and the mask is
computed inside the graph from the context lengths. Between steps the host only copies the inputs
(pinned memory, asynchronously) and reads back the sampled tokens: no other synchronisation.
Off the GPU (tests) the same static step runs eagerly, so its bookkeeping is checked on a CPU.
"""
from __future__ import annotations

import logging

import torch

from local_engine.attention import bmm_decode, storage_view, write_kv
from local_engine.graph_buckets import (
    BATCH_BUCKETS,
    GraphKey,
    PaddedDecode,
    context_buckets,
    graph_key,
    pad_decode,
)
from local_engine.kv_cache import PagedKVCache
from local_engine.kv_quant import dequantize
from local_engine.model import LlamaModel

_WARMUP_RUNS = 2  # eager runs on a side stream before capture: lazy inits, cuBLAS workspaces
log = logging.getLogger(__name__)


class StaticDecodeStep:
    """One graph key's static inputs and output, and the forward that reads nothing else."""

    def __init__(self, key: GraphKey, model: LlamaModel, kv_cache: PagedKVCache, scratch_block: int,
                 device: torch.device) -> None:
        self.key, self.model, self.kv_cache = key, model, kv_cache
        B, NB, bs = key.num_seqs, key.num_blocks, kv_cache.block_size
        self.pinned = device.type == "cuda"
        # one int64 buffer, so a step's inputs travel in one copy; the graph reads these views of it.
        # Every row starts as padding (the scratch block), so warm-up runs write nothing real.
        self.inputs = torch.cat([torch.zeros(2 * B, dtype=torch.int64), torch.full((B,), scratch_block * bs),
                                 torch.ones(B, dtype=torch.int64), torch.full((B * NB,), scratch_block)]).to(device)
        self.input_ids, self.positions, self.slot_mapping, self.context_lens = self.inputs[:4 * B].view(4, B)
        self.block_tables = self.inputs[4 * B:].view(B, NB)
        self.logits: torch.Tensor | None = None  # (B, V) float32: the captured forward's output

    def load(self, padded: PaddedDecode) -> None:
        """Copy one step's padded inputs into the static buffer: one host -> device copy, no sync.

        A fresh pinned tensor each step: torch's pinned-memory cache hands its block out again only once
        the copy that read it has run, so the host never overwrites a copy still in flight.
        """
        flat = [*padded.input_ids, *padded.positions, *padded.slot_mapping, *padded.context_lens,
                *(b for row in padded.block_tables for b in row)]
        host = torch.tensor(flat, dtype=torch.int64, pin_memory=self.pinned)
        self.inputs.copy_(host, non_blocking=self.pinned)

    def forward(self) -> torch.Tensor:
        """(B, V) float32 logits of every row, from the static buffers only."""
        cache, B = self.kv_cache, self.key.num_seqs
        L = self.key.num_blocks * cache.block_size
        kvh = cache.tensor.shape[1] // 2
        visible = torch.arange(L, device=self.context_lens.device)[None, :] < self.context_lens[:, None]  # (B, L)
        bias = torch.zeros(B, L, dtype=self.model.dtype, device=visible.device).masked_fill_(
            ~visible, float("-inf"))
        bias = bias.repeat(kvh, 1).unsqueeze(1)  # (KVH * B, 1, L), as bmm_decode wants
        gather = self.block_tables.view(-1)  # (B * NB,)

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            layer_cache, scales = cache.layer(layer), cache.layer_scales(layer)
            write_kv(layer_cache, k, v, self.slot_mapping, scales)
            two_kvh, _, _, D = layer_cache.shape
            kv = dequantize(storage_view(layer_cache).index_select(1, gather), layer_cache.dtype, q.dtype, scales)
            return bmm_decode(q, kv.view(two_kvh, B, L, D), bias)  # (B, H, D)

        return self.model(self.input_ids, self.positions, attend)


class DecodeGraphs:
    """The graphs of one runner: looked up per decode step, captured lazily into one shared pool."""

    def __init__(self, model: LlamaModel, kv_cache: PagedKVCache, *, scratch_block: int, max_positions: int,
                 device: torch.device, batch_buckets: tuple[int, ...] = BATCH_BUCKETS) -> None:
        self.model, self.kv_cache, self.device = model, kv_cache, device
        self.scratch_block = scratch_block
        self.batch_buckets = batch_buckets
        self.width_buckets = context_buckets(-(-max_positions // kv_cache.block_size))
        self.capture = device.type == "cuda"  # elsewhere the static step runs eagerly
        self.steps: dict[GraphKey, StaticDecodeStep] = {}
        self.graphs: dict[GraphKey, torch.cuda.CUDAGraph] = {}
        self._pool = torch.cuda.graph_pool_handle() if self.capture else None
        self._stream = torch.cuda.Stream(device) if self.capture else None
        self.failed: str | None = None  # why a capture failed: every step runs eagerly from then on

    def run(self, token_ids: list[int], positions: list[int], block_tables: list[list[int]]) -> torch.Tensor | None:
        """(n, V) float32 logits of a decode step of n sequences, or None when no graph is that large.

        The tensor is the graph's output buffer: read it before the next step replays the graph.
        """
        key = graph_key(len(token_ids), max(positions) + 1, block_size=self.kv_cache.block_size,
                        batch_buckets=self.batch_buckets, width_buckets=self.width_buckets)
        if key is None or self.failed is not None:
            return None
        step = self.steps.get(key) or self._build(key)
        if step is None:
            return None
        step.load(pad_decode(token_ids, positions, block_tables, key, block_size=self.kv_cache.block_size,
                             scratch_block=self.scratch_block))
        if self.capture:
            self.graphs[key].replay()
            assert step.logits is not None
            logits = step.logits
        else:
            logits = step.forward()
        return logits[:len(token_ids)]

    def _build(self, key: GraphKey) -> StaticDecodeStep | None:
        step = StaticDecodeStep(key, self.model, self.kv_cache, self.scratch_block, self.device)
        if self.capture:
            try:
                self.graphs[key] = self._capture(step)
            except Exception as exc:  # e.g. out of memory, an op that cannot be captured: serve without graphs
                self.failed = f"{type(exc).__name__}: {exc}"
                log.warning("CUDA graph capture of %s failed (%s); decode steps run eagerly from now on",
                            key, self.failed)
                return None
        self.steps[key] = step
        return step

    def _capture(self, step: StaticDecodeStep) -> torch.cuda.CUDAGraph:
        """Warm up on the capture stream, then record the forward into the shared pool (torch's recipe:
        side-stream warm-up, one pool and one stream for every capture, outputs kept alive by ``step``)."""
        assert self._stream is not None
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.inference_mode(), torch.cuda.stream(self._stream):
            for _ in range(_WARMUP_RUNS):
                step.forward()
        torch.cuda.current_stream(self.device).wait_stream(self._stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool, stream=self._stream):
            step.logits = step.forward()
        return graph
