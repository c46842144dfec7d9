"""The model runner: owns the model, the paged KV pool and the sampler on one device.

``run(batch)`` computes one ScheduledBatch — writes the new tokens' K/V through the block
tables, attends, and samples where the batch asks — and never mutates the Sequences.
"""
from __future__ import annotations

import os
from functools import partial
from typing import Literal

import torch

from local_engine.attention import (
    AttentionMetadata,
    build_attention_metadata,
    groups_from,
    mirrored_decode_attention,
    paged_attention,
    paged_attention_reference,
    write_kv,
)
from local_engine.batch import ScheduledBatch
from local_engine.cuda_graphs import DecodeGraphs
from local_engine.decode_mirror import DecodeMirror, MirrorPlan
from local_engine.invariant_attention import RowGroup, build_row_groups, invariant_attention
from local_engine.kv_cache import PagedKVCache, resolve_kv_dtype
from local_engine.kv_calibration import calibrate_scales
from local_engine.model import LlamaModel
from local_engine.model_config import ModelConfig
from local_engine.native.paged_decode import MAX_SEQS as NATIVE_MAX_SEQS
from local_engine.native.paged_decode import NativeDecodeAttention, native_decode_attention
from local_engine.runner_threads import StepThreads, use_threads
from local_engine.sampler import SamplingRow, sample
from local_engine.sequence import Sequence
from local_engine.step_output import StepOutput, TokenLogprobs

__all__ = ["ModelRunner", "RunnerError", "StepOutput", "TokenLogprobs"]

# "deterministic": batch-invariant (invariant_attention.py); pair it with model.make_batch_invariant
AttentionImpl = Literal["fast", "reference", "deterministic"]
_MIRROR_MAX_BYTES = 4 << 30
# Matmul tile of the batch-invariant mode: batch 1 computes this many rows, batch 64 makes 64 / it calls.
# 4 keeps a GGUF's 4-bit matrices on the int4 kernel (its batch-1 speed); SmolLM2 Q4_1, 1 thread:
# 4 -> 0.70-0.87x / 0.43-0.53x of the default's decode tok/s at batch 1 / 64, 8 (bf16) -> 0.33x / 0.60x
# (docs/benchmarks.md, "--deterministic").
INVARIANT_TILE_ROWS = 4


class RunnerError(ValueError):
    """The batch cannot be computed as given (a block table too short, a position past the context)."""


def _sampling_row(seq: Sequence) -> SamplingRow:
    p = seq.sampling
    penalised = bool(p.presence_penalty or p.frequency_penalty)  # only then copy the completion
    return SamplingRow(p, seq.completion_token_ids if penalised else [], seq.num_completion_tokens)


class ModelRunner:
    def __init__(self, model: LlamaModel, model_config: ModelConfig, *, device: str | torch.device,
                 dtype: torch.dtype, kv_dtype: str | torch.dtype | None, num_blocks: int, block_size: int,
                 attention: AttentionImpl = "fast", step_threads: StepThreads | None = None,
                 kv_scaled: bool = True, cuda_graphs: bool = False, activations: str | None = None,
                 split_mixed: bool | None = None) -> None:
        if cuda_graphs and attention != "fast":
            raise RunnerError(f"CUDA graphs replay the fast attention path, not {attention!r}")
        self.device = torch.device(device)
        self.dtype = dtype
        self.model_config = model_config
        self.model = model.to(device=self.device, dtype=dtype).requires_grad_(False).eval()
        # the native matmuls' activations: as asked, else bf16 for --deterministic (its numerics unchanged),
        # else HYBRIDGW_ACTIVATIONS or int8 (native/kernels.py)
        self.model.prepack_weights(activations or ("bf16" if attention == "deterministic" else None))
        if attention == "deterministic":
            self.model.make_batch_invariant(INVARIANT_TILE_ROWS)
        # kv_scaled: an FP8 pool keeps per-layer, per-head scales (1 until calibrate_kv_scales)
        self.kv_cache = PagedKVCache(model_config, num_blocks, block_size, resolve_kv_dtype(kv_dtype, dtype),
                                     self.device, scaled=kv_scaled, scratch_blocks=1 if cuda_graphs else 0)
        self.attention = attention
        self.max_positions = self.model.rope_table.shape[0]
        # decode steps through CUDA graphs (cuda_graphs.py; eager static steps off the GPU, for tests)
        self.graphs = DecodeGraphs(self.model, self.kv_cache, scratch_block=num_blocks, device=self.device,
                                   max_positions=self.max_positions) if cuda_graphs else None
        self.step_threads = step_threads  # None: every step on torch's current thread count
        self.mirror = DecodeMirror(model_config.num_layers, min(self.kv_cache.num_bytes // 2, _MIRROR_MAX_BYTES))
        # A mixed step is one forward pass (its decodes' and chunks' rows share every matmul); True runs
        # it as two, decodes then prefills, as before (bench A/B: HYBRIDGW_MIXED_PASS=split).
        self.split_mixed = os.environ.get("HYBRIDGW_MIXED_PASS") == "split" if split_mixed is None else split_mixed
        # A step's decode rows attend through the native kernel up to this many sequences (None: any; the
        # mirror's bmm path takes larger ones), for A/B benches (paged_decode.MAX_SEQS)
        self.native_decode_max_seqs = NATIVE_MAX_SEQS

    @property
    def num_blocks(self) -> int:
        return self.kv_cache.num_blocks

    @property
    def block_size(self) -> int:
        return self.kv_cache.block_size

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv_cache.kv_bytes_per_token

    def calibrate_kv_scales(self, sequences: list[list[int]]) -> None:
        """Set a scaled FP8 pool's scales from these token sequences (kv_calibration.py); else nothing."""
        if self.kv_cache.scales is not None:
            self.kv_cache.set_scales(calibrate_scales(self.model, sequences, self.device))

    def run(self, batch: ScheduledBatch) -> StepOutput:
        if batch.num_seqs == 0:
            return StepOutput(token_ids=(), logprobs=())
        if self.step_threads is not None:
            use_threads(self.step_threads.threads_for(batch.total_tokens))
        parts = batch.parts() if self.split_mixed else (batch,)
        if len(parts) > 1:  # a mixed step in two passes: its decode part, then its prefill part
            outs = [self._run(part) for part in parts]
            return StepOutput(token_ids=tuple(t for o in outs for t in o.token_ids),
                              logprobs=tuple(lp for o in outs for lp in o.logprobs))
        return self._run(batch)

    def logits(self, batch: ScheduledBatch) -> torch.Tensor:
        """(S, V) float32 logits of the batch's sampling sequences in one forward pass, nothing sampled
        (quality benches, graphs-on/off checks); the K/V are written as ``run`` writes them."""
        samples = [batch.samples(i) for i in range(batch.num_seqs)]
        logits = self._graph_logits(batch) if self.graphs is not None and batch.is_decode else None
        return self._eager_logits(batch, samples) if logits is None else logits

    def _run(self, batch: ScheduledBatch) -> StepOutput:
        samples = [batch.samples(i) for i in range(batch.num_seqs)]
        logits = self.logits(batch)
        with torch.inference_mode():
            rows = [_sampling_row(s) for s, ok in zip(batch.seqs, samples) if ok]
            token_ids, logprobs = sample(logits.float(), rows) if rows else ([], [])
        out_ids: list[int | None] = [None] * batch.num_seqs
        out_lp: list[TokenLogprobs | None] = [None] * batch.num_seqs
        sampled = iter(zip(token_ids, logprobs))
        for i, ok in enumerate(samples):
            if ok:
                out_ids[i], out_lp[i] = next(sampled)
        return StepOutput(token_ids=tuple(out_ids), logprobs=tuple(out_lp))

    def _eager_logits(self, batch: ScheduledBatch, samples: list[bool]) -> torch.Tensor:
        """(S, V) logits of the sampling sequences, computed op by op."""
        small = self._native_decode(batch)
        if small is not None:
            return small
        input_ids, positions, meta = self._prepare(batch)
        native = self._native_attention(meta, batch.num_decodes)
        if native is None:
            plan = self._mirror_plan(batch, meta)
        else:  # the mirror does not see these decodes' K/V
            self.mirror.invalidate()
            plan = None
        ends = torch.tensor(meta.query_lens).cumsum(0) - 1
        logits_rows = ends[torch.tensor(samples)].to(self.device)  # (S,) last token of each sampling seq
        try:
            with torch.inference_mode():
                attend = self._attention_fn(meta, plan, native, batch.num_decodes)
                logits = self.model(input_ids, positions, attend, logits_rows)  # (S, V)
        except BaseException:
            self.mirror.invalidate()  # some layers may have appended, others not
            raise
        if plan is not None:
            self.mirror.commit()
        return logits

    def _native_decode(self, batch: ScheduledBatch) -> torch.Tensor | None:
        """(B, V) logits of a decode step through the native attention kernel, or None where it does
        not apply. Only what that kernel reads is built (no AttentionMetadata: its padded groups and masks
        cost ~0.2-0.3 ms a step at batch 1, ~2% of it); the same computation as through ``_prepare``."""
        cache, d = self.kv_cache, batch.num_seqs
        if (self.attention != "fast" or not batch.is_decode or self.model.native is None
                or d == 0 or cache.tensor.dtype != torch.bfloat16 or cache.scales is not None
                or (self.native_decode_max_seqs is not None and d > self.native_decode_max_seqs)):
            return None
        positions = [seq.num_cached_tokens for seq in batch.seqs]
        for seq, p in zip(batch.seqs, positions):
            self._check(seq.seq_id, 1, p + 1, seq.num_tokens, len(seq.block_table))
        native = native_decode_attention(self.model.native, cache.tensor, self.model_config.num_heads,
                                         [seq.block_table for seq in batch.seqs], positions, [1] * d,
                                         self.native_decode_max_seqs)
        if native is None:
            return None
        self.mirror.invalidate()  # as _mirror_plan does for decodes the bmm path does not take
        with torch.inference_mode():
            input_ids = torch.tensor([seq.token_ids[p] for seq, p in zip(batch.seqs, positions)], dtype=torch.int64)
            return self.model(input_ids, torch.tensor(positions, dtype=torch.int64), native)

    def _graph_logits(self, batch: ScheduledBatch) -> torch.Tensor | None:
        """(B, V) logits of a decode step through a CUDA graph, or None when no graph is that large."""
        assert self.graphs is not None
        positions = [seq.num_cached_tokens for seq in batch.seqs]
        for seq, p in zip(batch.seqs, positions):
            self._check(seq.seq_id, 1, p + 1, seq.num_tokens, len(seq.block_table))
        with torch.inference_mode():
            logits = self.graphs.run([seq.token_ids[p] for seq, p in zip(batch.seqs, positions)], positions,
                                     [seq.block_table for seq in batch.seqs])
        if logits is not None:
            self.mirror.invalidate()  # the mirror did not see these tokens
        return logits

    def _mirror_plan(self, batch: ScheduledBatch, meta: AttentionMetadata) -> MirrorPlan | None:
        """The decodes of a step (its leading rows) may reuse last step's gathered K/V when the fast bmm
        path computes them in one group; prefills of other sequences beside them keep the mirror."""
        d = batch.num_decodes
        self.mirror.forget(s.seq_id for s in batch.seqs[d:])  # it stays, unless it holds one of these
        if d == 0:
            return None
        groups = [g for g in meta.groups if g.token_start < d]
        if self.attention != "fast" or len(groups) != 1 or not groups[0].use_bmm:
            self.mirror.invalidate()
            return None
        return self.mirror.plan(tuple(s.seq_id for s in batch.seqs[:d]), [s.block_table for s in batch.seqs[:d]],
                                [start + 1 for start in meta.start_positions[:d]], block_size=self.block_size,
                                num_kv_heads=self.model_config.num_kv_heads,
                                bytes_per_token=self.model_config.kv_bytes_per_token(self.dtype),
                                dtype=self.dtype, device=self.device)

    def _native_attention(self, meta: AttentionMetadata, d: int) -> NativeDecodeAttention | None:
        """The native kernel for a step's d decode rows (its leading rows), or None where it does not apply."""
        if self.attention != "fast" or d == 0 or self.kv_cache.scales is not None:
            return None
        return native_decode_attention(self.model.native, self.kv_cache.tensor, self.model_config.num_heads,
                                       meta.block_tables[:d], meta.start_positions[:d], meta.query_lens[:d],
                                       self.native_decode_max_seqs)

    def _attention_fn(self, meta: AttentionMetadata, plan: MirrorPlan | None,  # type: ignore[no-untyped-def]
                      native: NativeDecodeAttention | None, num_decodes: int):
        """The step's attention: the decodes (leading rows) through the native kernel or the mirror where
        they apply, the prefill chunks through the padded groups, all K/V written first."""
        attend = (partial(paged_attention, kernels=self.model.native) if self.attention == "fast"
                  else paged_attention_reference)
        cache, mirror, d = self.kv_cache, self.mirror, num_decodes
        rows = self._row_groups(meta) if self.attention == "deterministic" else None
        if native is not None and d == len(meta.query_lens):  # decodes only: blocks read in place
            return native
        rest = groups_from(meta, d)  # a mixed step's prefill groups

        def attention_fn(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            layer_cache, scales = cache.layer(layer), cache.layer_scales(layer)
            stored = write_kv(layer_cache, k, v, meta.slot_mapping, scales)  # (2*KVH, T, D)
            if rows is not None:
                return invariant_attention(q, layer_cache, rows, scales)
            if plan is None and native is None:
                return attend(q, layer_cache, meta, scales)
            if native is not None:  # it writes the decodes' K/V again (the same values) and attends in place
                head = native(layer, q[:d], k[:d], v[:d])
            else:
                assert plan is not None
                head, mirror.buffers[layer] = mirrored_decode_attention(q[:d], stored[:, :d], layer_cache,
                                                                       mirror.buffers[layer], plan, scales)
            return head if not rest else torch.cat([head, attend(q, layer_cache, meta, scales, rest)])
        return attention_fn

    def _row_groups(self, meta: AttentionMetadata) -> tuple[RowGroup, ...]:
        return build_row_groups([list(t) for t in meta.block_tables], list(meta.start_positions),
                                list(meta.query_lens), block_size=self.block_size,
                                num_heads=self.model_config.num_heads, num_kv_heads=self.model_config.num_kv_heads,
                                head_dim=self.model_config.head_dim, dtype=self.dtype, device=self.device)

    def _prepare(self, batch: ScheduledBatch) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
        ids: list[int] = []
        positions: list[int] = []
        starts, lens = [], []
        for seq, n in zip(batch.seqs, batch.num_scheduled_tokens):
            start, end = seq.num_cached_tokens, seq.num_cached_tokens + n
            self._check(seq.seq_id, n, end, seq.num_tokens, len(seq.block_table))
            ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            starts.append(start)
            lens.append(n)
        if not batch.is_decode and ids and not 0 <= min(ids) <= max(ids) < self.model_config.vocab_size:
            raise RunnerError(f"token ids must lie in [0, {self.model_config.vocab_size})")
        meta = build_attention_metadata([s.block_table for s in batch.seqs], starts, lens,
                                        block_size=self.block_size, num_heads=self.model_config.num_heads,
                                        num_kv_heads=self.model_config.num_kv_heads, dtype=self.dtype,
                                        device=self.device, split_at=batch.num_decodes)
        return (torch.tensor(ids, dtype=torch.int64).to(self.device),
                torch.tensor(positions, dtype=torch.int64).to(self.device), meta)

    def _check(self, seq_id: int, n: int, end: int, num_tokens: int, num_blocks: int) -> None:
        if n < 1 or end > num_tokens:
            raise RunnerError(f"sequence {seq_id}: {n} tokens scheduled past its {num_tokens} tokens")
        if end > num_blocks * self.block_size:
            raise RunnerError(f"sequence {seq_id}: {num_blocks} blocks hold {num_blocks * self.block_size} "
                              f"tokens, {end} needed")
        if end > self.max_positions:
            raise RunnerError(f"sequence {seq_id}: position {end - 1} is past the model's {self.max_positions}")
