"""Engine state documents → EngineSnapshot (pure): our engine's `GET /v1/engine/state` JSON, and
vLLM's Prometheus `/metrics` text (KV usage, queue, block config; throughput from counter deltas)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from policies.live import EngineSnapshot


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"engine state field {key!r} must be a number ≥ 0, got {value!r}")
    return int(value)


def _float(data: Mapping[str, Any], key: str) -> float:
    value = data.get(key, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"engine state field {key!r} must be a number, got {value!r}")
    return float(value)


def parse_engine_state(data: Any, taken_at: float) -> EngineSnapshot | None:
    """Our engine's state JSON; None when the engine says it is not healthy (unknown, not usable)."""
    if not isinstance(data, Mapping):
        raise ValueError("engine state must be a JSON object")
    if data.get("healthy") is False:
        return None
    total = _int(data, "num_blocks_total")
    return EngineSnapshot(
        taken_at=taken_at, model=str(data.get("model", "")), kv_bytes_per_token=_int(data, "kv_bytes_per_token"),
        block_size=_int(data, "block_size") or 16, num_blocks_total=total,
        num_blocks_free=min(total, _int(data, "num_blocks_free")), num_running=_int(data, "num_running"),
        num_waiting=_int(data, "num_waiting"), prefix_cache_hit_rate=_float(data, "prefix_cache_hit_rate"),
        prefill_tokens_per_s=_float(data, "prefill_tokens_per_s"),
        decode_tokens_per_s=_float(data, "decode_tokens_per_s"), max_model_len=_int(data, "max_model_len"),
        max_num_seqs=_int(data, "max_num_seqs"), max_waiting=_int(data, "max_waiting"),
        prefix_caching=data.get("prefix_caching") is True,
        prefix_queried_tokens=_int(data, "prefix_queried_tokens"),
    )


@dataclass(frozen=True, slots=True)
class VllmSample:
    """The vLLM metrics routing needs, summed over label sets (one server may report several engines)."""

    taken_at: float
    kv_usage: float  # 0..1
    num_running: int
    num_waiting: int
    block_size: int
    num_gpu_blocks: int
    prompt_tokens_total: float
    generation_tokens_total: float
    prefix_hit_rate: float


_GAUGES = {
    "vllm:kv_cache_usage_perc": "kv", "vllm:gpu_cache_usage_perc": "kv",  # v1 name, v0 name
    "vllm:num_requests_running": "running", "vllm:num_requests_waiting": "waiting",
    "vllm:prompt_tokens_total": "prompt", "vllm:generation_tokens_total": "generation",
    "vllm:prefix_cache_queries_total": "pc_queries", "vllm:prefix_cache_hits_total": "pc_hits",
    "vllm:gpu_prefix_cache_hit_rate": "pc_rate",
}


def parse_vllm_metrics(text: str, taken_at: float) -> VllmSample:
    values: dict[str, float] = {}
    block_size = num_blocks = 0
    kv_samples = 0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:cache_config_info":
                block_size = int(float(sample.labels.get("block_size", 0) or 0))
                num_blocks = int(float(sample.labels.get("num_gpu_blocks", 0) or 0))
                continue
            key = _GAUGES.get(sample.name)
            if key is not None:
                values[key] = values.get(key, 0.0) + sample.value
                kv_samples += key == "kv"
    hit_rate = values.get("pc_rate", 0.0)
    if values.get("pc_queries"):
        hit_rate = values.get("pc_hits", 0.0) / values["pc_queries"]
    return VllmSample(taken_at, values.get("kv", 0.0) / max(1, kv_samples), int(values.get("running", 0)),
                      int(values.get("waiting", 0)), block_size or 16, num_blocks, values.get("prompt", 0.0),
                      values.get("generation", 0.0), hit_rate)


def vllm_snapshot(cur: VllmSample, prev: VllmSample | None, kv_bytes_per_token: int = 0) -> EngineSnapshot:
    """Throughput is the counters' rate since the previous poll (0 on the first one)."""
    dt = cur.taken_at - prev.taken_at if prev is not None else 0.0
    prefill = (cur.prompt_tokens_total - prev.prompt_tokens_total) / dt if prev is not None and dt > 0 else 0.0
    decode = (cur.generation_tokens_total - prev.generation_tokens_total) / dt if prev is not None and dt > 0 else 0.0
    free = round(cur.num_gpu_blocks * (1.0 - min(1.0, max(0.0, cur.kv_usage))))
    return EngineSnapshot(
        taken_at=cur.taken_at, kv_bytes_per_token=kv_bytes_per_token, block_size=cur.block_size,
        num_blocks_total=cur.num_gpu_blocks, num_blocks_free=free, num_running=cur.num_running,
        num_waiting=cur.num_waiting, prefix_cache_hit_rate=cur.prefix_hit_rate,
        prefill_tokens_per_s=max(0.0, prefill), decode_tokens_per_s=max(0.0, decode),
    )
