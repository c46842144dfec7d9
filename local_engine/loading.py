"""Load a model spec into a ready ModelRunner + Tokenizer: picks device and dtypes, sizes the KV pool.

Defaults: CUDA when available (bf16, else fp16; KV pool from a fraction of free GPU memory),
else CPU in bf16 where the CPU has native bf16 (measured fastest and correct; fp32 otherwise)
with a byte-sized KV pool. On a CPU with at most 4 cores, a model that shares its process with the
server (the thread core) leaves one core to the event loop: with every core in torch's thread pool,
the event loop's thread stalls each op's barrier and contends for the GIL (measured on 2 shared
cores: 1 thread 35-43 tok/s at batch 1, 2 threads 3-61 tok/s). A model in a process of its own
(the process core) takes every core.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from local_engine.kv_cache import cuda_kv_budget, num_blocks_for_budget, resolve_kv_dtype
from local_engine.kv_calibration import calibration_token_ids
from local_engine.loaders import gguf, hf, weight_cache
from local_engine.loaders.registry import ModelSource, resolve_model
from local_engine.loaders.tiny_random import tiny_random_config, tiny_random_tensors
from local_engine.loaders.tokenizer_source import tokenizer_for
from local_engine.model import build_model
from local_engine.model_config import ModelConfig
from local_engine.runner import ModelRunner
from local_engine.runner_threads import SMALL_MACHINE_CPUS, StepThreads, available_cpus
from local_engine.tokenizer import Tokenizer
from local_engine.weights import INT4_SUFFIXES, fuse_hf_state_dict, fuse_int4_weights

DEFAULT_CPU_KV_BYTES = 1 << 30
TINY_CPU_KV_BYTES = 32 << 20
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    runner: ModelRunner
    tokenizer: Tokenizer
    model_config: ModelConfig
    model_name: str
    max_model_len: int


def load_engine_model(spec: str, *, device: str | None = None, dtype: str | None = None,
                      kv_dtype: str | None = None, kv_cache_bytes: int | None = None,
                      gpu_memory_fraction: float = 0.85, block_size: int = 16,
                      max_model_len: int | None = None, num_threads: int | None = None,
                      shares_process_with_server: bool = True, deterministic: bool = False,
                      small_step_threads: int | None = None, kv_scales: bool = True,
                      cuda_graphs: bool | None = None, activations: str | None = None) -> LoadedModel:
    """Load ``spec`` (see loaders.registry) onto a device; ``num_threads`` sets torch's CPU threads
    (process-wide; default: see the module docstring; OMP_NUM_THREADS, when set, is respected);
    ``deterministic``: batch-invariant matmuls and attention (a request's output never depends on the batch);
    ``small_step_threads``: CPU threads of steps of a few tokens (runner_threads.py; None: all of them);
    ``kv_scales``: an fp8 pool's scales, calibrated here; ``cuda_graphs``: None = on for CUDA unless deterministic;
    ``activations``: the native 4-bit matmuls' input rows, "bf16" or "int8" (None: see ModelRunner)."""
    started = time.perf_counter()
    source = resolve_model(spec)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cpu" or num_threads is not None:  # on a GPU only when asked: its CPU work is small
        _set_cpu_threads(num_threads, shares_process_with_server)
    torch_dtype = _resolve_dtype(dtype, dev, source)
    config, tokenizer, state = _read_model(source, torch_dtype)
    max_len = min(max_model_len or config.max_position_embeddings, config.max_position_embeddings)
    model = build_model(config, state, dtype=torch_dtype, device=dev, max_positions=max_len)
    del state
    kv_torch_dtype = resolve_kv_dtype(kv_dtype, torch_dtype)
    if kv_cache_bytes is None:
        kv_cache_bytes = (cuda_kv_budget(dev, gpu_memory_fraction) if dev.type == "cuda"
                          else TINY_CPU_KV_BYTES if source.kind == "tiny-random" else DEFAULT_CPU_KV_BYTES)
    num_blocks = num_blocks_for_budget(config, kv_cache_bytes, block_size, kv_torch_dtype)
    if cuda_graphs and dev.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, not {dev}")
    graphs = (dev.type == "cuda" and not deterministic) if cuda_graphs is None else cuda_graphs
    runner = ModelRunner(model, config, device=dev, dtype=torch_dtype, kv_dtype=kv_torch_dtype,
                         num_blocks=num_blocks, block_size=block_size,
                         attention="deterministic" if deterministic else "fast",
                         step_threads=None if deterministic else _step_threads(dev, small_step_threads),
                         kv_scaled=kv_scales, cuda_graphs=graphs, activations=activations)
    if runner.kv_cache.scales is not None:  # a scaled fp8 pool: its scales from the built-in text
        runner.calibrate_kv_scales(calibration_token_ids(tokenizer))
    log.info("loaded %s on %s (%s, KV %s x %d blocks of %d) in %.1fs", source.name, dev, torch_dtype,
             kv_torch_dtype, num_blocks, block_size, time.perf_counter() - started)
    return LoadedModel(runner=runner, tokenizer=tokenizer, model_config=config, model_name=source.name,
                       max_model_len=max_len)


def _set_cpu_threads(num_threads: int | None, shares_process_with_server: bool) -> None:
    if num_threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return
        cpus = available_cpus()
        if cpus > SMALL_MACHINE_CPUS:
            return  # torch's default (physical cores) already leaves hyper-threads free
        num_threads = max(1, cpus - 1) if shares_process_with_server else cpus
    torch.set_num_threads(num_threads)


def _step_threads(device: torch.device, small: int | None) -> StepThreads | None:
    full = torch.get_num_threads()
    return StepThreads(full, small) if device.type == "cpu" and small is not None and small < full else None


def _resolve_dtype(dtype: str | None, device: torch.device, source: ModelSource) -> torch.dtype:
    if dtype is not None:
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        return _DTYPES[dtype]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if source.kind == "tiny-random":
        return torch.float32  # tiny anyway; fp32 keeps greedy ties out of tests
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def _read_model(source: ModelSource, dtype: torch.dtype) -> tuple[ModelConfig, Tokenizer, dict[str, torch.Tensor]]:
    if source.kind == "tiny-random":
        tokenizer = tokenizer_for(source)
        config = tiny_random_config(tokenizer.vocab_size, tokenizer.bos_token_id,
                                    tuple(sorted(tokenizer.eos_token_ids)))
        return config, tokenizer, fuse_hf_state_dict(config, tiny_random_tensors(config, source.seed))
    assert source.path is not None
    if source.kind == "hf":
        config = hf.model_config(source.path)
        tensors = {name: t.to(dtype) for name, t in hf.iter_state_dict(source.path)}
        return config, tokenizer_for(source), fuse_hf_state_dict(config, tensors)
    model = gguf.open_gguf(source.path)
    config = gguf.model_config(model)
    return config, tokenizer_for(source, model.metadata), _gguf_state(model, config, source.path, dtype)


def _gguf_state(model: gguf.GGUFModel, config: ModelConfig, path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's (fused, cast) state dict: from the weight cache, else dequantised and cached."""
    key = weight_cache.cache_key(path, dtype)
    cached = weight_cache.load(key)
    if cached is not None:
        return cached
    tensors = {name: torch.from_numpy(array).to(dtype) for name, array in gguf.iter_state_dict(model, config)}
    state = fuse_hf_state_dict(config, tensors)
    int4 = {name: tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in groups)
            for name, groups in gguf.iter_int4_weights(model, config)}
    state |= fuse_int4_weights(config, int4)  # the file's own 4-bit codes, for small-batch matmuls
    head = gguf.head_int4_groups(model, config)
    if head is not None:  # the LM head's codes, for the one-row int4 head (model.HEAD_INT4_MAX_ROWS)
        state |= {f"head{suffix}": torch.from_numpy(a) for suffix, a in zip(INT4_SUFFIXES, head)}
    weight_cache.store(key, state)
    return state
