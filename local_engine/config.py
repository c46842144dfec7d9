"""Engine settings: one frozen value built by the CLI (or a test) and read by every part of the engine."""
from __future__ import annotations

from dataclasses import dataclass

# The longest stall a running stream sees is one step. On a shared 2-core CPU, SmolLM2-135M with a
# 4k-token prompt arriving: 64 -> longest gap 0.9 s, 128 -> 1.4 s, both at the same prefill rate
# (~150 tok/s, docs/benchmarks.md). A GPU computes 2048 tokens in a few tens of milliseconds.
CPU_TOKEN_BUDGET = 64
GPU_TOKEN_BUDGET = 2048


class ConfigError(ValueError):
    """A setting that cannot work (names the field)."""


@dataclass(frozen=True)
class EngineConfig:
    """How the engine schedules and how much memory it takes; defaults depend on the device kind at most."""

    model: str = "smollm2"  # loader spec: "smollm2", "tiny-random", a GGUF file or an HF folder
    device: str | None = None  # None: cuda when present, else cpu
    dtype: str | None = None  # None: the loader's choice for the device
    kv_dtype: str | None = None  # None: same as dtype
    kv_cache_bytes: int | None = None  # a fixed KV pool size (CPU default is the loader's)
    gpu_memory_fraction: float = 0.85  # on CUDA, when kv_cache_bytes is None
    cpu_threads: int | None = None  # torch CPU threads; None: the loader's choice for the machine
    # CPU threads of a step of at most 16 tokens (a few decodes): a 2-thread batch-1 step pays a
    # sleeping peer's wake-up per kernel (docs/benchmarks.md). None: 1 on CPUs of at most 4 cores
    # (measured there), every step on cpu_threads above; 0: every step on cpu_threads.
    small_step_threads: int | None = None
    block_size: int = 16  # tokens per KV block
    max_num_seqs: int = 64  # sequences in one step
    # Per-step token budget: running decodes take one token each, prompt chunks the rest. It bounds
    # how long a long prompt stalls the running streams per step. None: the device's default.
    max_num_batched_tokens: int | None = None
    # A step with no running decode (nobody to stall) may prefill up to this many tokens: a burst of
    # new requests into an idle engine starts in one step, not one budget-sized step at a time.
    max_idle_batched_tokens: int = 2048
    # While decodes run, a prompt token at context c costs 1 + c/this of the budget: a chunk's attention
    # reads its whole context, so late chunks of a long prompt get smaller and the step stays flatter.
    # 0 (default): tokens only; through the server it did not lower the max gap (docs/benchmarks.md).
    context_cost_tokens: int = 0
    # While decodes run and two or more new prompts wait, a step may admit up to this many of their tokens
    # (the floor's 64 per waiting prompt; default budget only): a burst of arrivals — 64 streams at once —
    # starts in a few steps instead of half a prompt a step, which kept only ~32 of 64 streams decoding
    # (256: steps of ~0.5 s on 2 cores while it lasts; 512 was no faster, ~0.9 s steps). One prompt arriving
    # alone (the long-prompt stall) keeps the floor. 0: off (docs/benchmarks.md, #14 64 streams).
    burst_batched_tokens: int = 256
    max_model_len: int | None = None  # None: the model's context (capped by the loader)
    max_waiting: int = 256  # queued (not yet running) requests before new ones get 503
    enable_priority: bool = False  # False: strict first-come-first-served
    enable_prefix_caching: bool = True  # reuse full KV blocks whose tokens (and prefix) match
    admission_watermark: float = 0.01  # keep this share of blocks free when admitting (limits thrash)
    stats_window_s: float = 10.0  # window of the "recent" tokens/s figures
    # Batch-invariant kernels: a request's tokens and logprobs do not depend on what runs beside it
    # (for replay and tests), at a throughput cost (docs/benchmarks.md).
    deterministic: bool = False
    # An fp8 KV pool stores K/V divided by per-layer, per-head power-of-two scales calibrated at load
    # (kv_calibration.py); False: the plain cast (values past 448 clamp, below 2^-9 vanish).
    kv_scales: bool = True
    # Decode steps replayed as CUDA graphs at bucketed batch sizes (cuda_graphs.py). None: on for
    # CUDA (unless deterministic), off on CPU; True on a CPU is refused at load.
    cuda_graphs: bool | None = None
    # The native 4-bit matmuls' input rows (CPU, bf16 models): "int8" quantized per group of 32 (integer dot
    # products, llama.cpp's method), "bf16" as they are. None: bf16 with --deterministic, else
    # HYBRIDGW_ACTIVATIONS or int8.
    activations: str | None = None

    def __post_init__(self) -> None:
        _positive("block_size", self.block_size)
        _positive("max_num_seqs", self.max_num_seqs)
        _positive("max_waiting", self.max_waiting)
        _positive("max_idle_batched_tokens", self.max_idle_batched_tokens)
        if self.max_num_batched_tokens is not None:
            _positive("max_num_batched_tokens", self.max_num_batched_tokens)
        if self.max_num_batched_tokens is not None and self.max_num_batched_tokens < self.max_num_seqs:
            raise ConfigError(
                f"max_num_batched_tokens ({self.max_num_batched_tokens}) must be >= max_num_seqs "
                f"({self.max_num_seqs}): a decode step takes one token per sequence"
            )
        if self.max_model_len is not None:
            _positive("max_model_len", self.max_model_len)
        if self.kv_cache_bytes is not None:
            _positive("kv_cache_bytes", self.kv_cache_bytes)
        if self.cpu_threads is not None:
            _positive("cpu_threads", self.cpu_threads)
        if self.burst_batched_tokens < 0:
            raise ConfigError(f"burst_batched_tokens must be >= 0, got {self.burst_batched_tokens}")
        if self.context_cost_tokens < 0:
            raise ConfigError(f"context_cost_tokens must be >= 0, got {self.context_cost_tokens}")
        if self.small_step_threads is not None and self.small_step_threads < 0:
            raise ConfigError(f"small_step_threads must be >= 0, got {self.small_step_threads}")
        if not 0.0 < self.gpu_memory_fraction <= 1.0:
            raise ConfigError(f"gpu_memory_fraction must be in (0, 1], got {self.gpu_memory_fraction}")
        if not 0.0 <= self.admission_watermark < 1.0:
            raise ConfigError(f"admission_watermark must be in [0, 1), got {self.admission_watermark}")
        if self.cuda_graphs and self.deterministic:
            raise ConfigError("cuda_graphs and deterministic exclude each other: the graphs' attention is "
                              "not the batch-invariant one")
        if self.activations not in (None, "bf16", "int8"):
            raise ConfigError(f"activations must be bf16 or int8, got {self.activations!r}")
        if self.stats_window_s <= 0:
            raise ConfigError(f"stats_window_s must be > 0, got {self.stats_window_s}")

    def token_budget(self, device_type: str) -> int:
        """The per-step token budget on this kind of device (the setting, else its default)."""
        if self.max_num_batched_tokens is not None:
            return self.max_num_batched_tokens
        default = CPU_TOKEN_BUDGET if device_type == "cpu" else GPU_TOKEN_BUDGET
        return max(default, self.max_num_seqs)

    def prefill_floor(self, device_type: str) -> int:
        """Prompt tokens a step may take however many decodes run, with the default budget (0 when set).

        Without it, max_num_seqs running decodes take the whole default budget and a new prompt
        gets one token a step (measured: 64 streams of 128-token prompts, no byte for 60 s).
        """
        if self.max_num_batched_tokens is not None:
            return 0
        return CPU_TOKEN_BUDGET if device_type == "cpu" else GPU_TOKEN_BUDGET


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
