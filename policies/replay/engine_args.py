"""The engine shape a policy's `engine_args` set (`--max-num-seqs 16`, `--kv-cache-bytes …`, …),
applied over the performance model's, so the replay simulates the engine the policy would spawn."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from policies.perf_model import EngineModel, PerfModel, PerfModelError

_INT_FLAGS = {"--max-num-seqs": "max_num_seqs", "--max-num-batched-tokens": "max_num_batched_tokens",
              "--max-model-len": "max_model_len", "--max-waiting": "max_waiting",
              "--block-size": "block_size", "--burst-batched-tokens": "burst_batched_tokens"}
_KV_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}


def _pairs(args: Sequence[str]) -> dict[str, str]:
    """`--flag value` and `--flag=value` forms; flags without a value map to ""."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        flag, sep, value = args[i].partition("=")
        if not sep and i + 1 < len(args) and not args[i + 1].startswith("--"):
            value, i = args[i + 1], i + 1
        out[flag] = value
        i += 1
    return out


def shaped_by_args(model: EngineModel, engine_args: Sequence[str]) -> EngineModel:
    """`model` with what the arguments say about the scheduler and the KV pool; other flags ignored."""
    flags = _pairs(engine_args)
    changes: dict[str, int] = {}
    for flag, field in _INT_FLAGS.items():
        if flag in flags:
            try:
                changes[field] = int(flags[flag])
            except ValueError:
                raise PerfModelError(f"engine_args: {flag} takes an integer, not {flags[flag]!r}") from None
    if "--max-num-batched-tokens" in flags:  # a budget by hand: no floor, no burst (local_engine/config.py)
        changes["prefill_floor_tokens"] = 0
    per_token = model.kv_bytes_per_token
    kv_dtype = flags.get("--kv-dtype")
    if kv_dtype in _KV_BYTES:  # the model's figure is for its own bf16 KV
        changes["kv_bytes_per_token"] = per_token = max(1, per_token * _KV_BYTES[kv_dtype] // 2)
    block_size = changes.get("block_size", model.block_size)
    if "--kv-cache-bytes" in flags:
        try:
            pool = int(flags["--kv-cache-bytes"])
        except ValueError:
            raise PerfModelError(f"engine_args: --kv-cache-bytes takes an integer, not {flags['--kv-cache-bytes']!r}") \
                from None
    else:
        pool = model.kv_pool_bytes  # the same bytes, re-cut for another dtype or block size
    changes["num_blocks"] = max(1, pool // (block_size * per_token))
    return replace(model, **changes)


def prefix_caching_off(engine_args: Sequence[str]) -> bool:
    return "--no-prefix-caching" in _pairs(engine_args)


def with_burst(perf: PerfModel, tokens: int, engines: Iterable[str]) -> PerfModel:
    """`perf` with these engines' (and the default engine's) burst budget set (`replay
    --burst-batched-tokens`), for a recording whose model does not say what its engine ran with (one
    before 2026-12-02 had none: 0)."""
    if tokens < 0:
        raise PerfModelError(f"--burst-batched-tokens must be ≥ 0, got {tokens}")
    models = {**perf.engines, **{name: perf.engine(name) for name in engines}}
    return replace(perf, engines={n: replace(m, burst_batched_tokens=tokens) for n, m in models.items()},
                   default_engine=replace(perf.default_engine, burst_batched_tokens=tokens))
