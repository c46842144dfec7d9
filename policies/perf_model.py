"""The performance model of each backend: engine step times and KV capacity, hosted TTFT / tokens/s
distributions and rate limits. Pure values built from a mapping (the model file's contents); the
replay simulator and `hybridgw size` read them. Defaults and their sources: docs/replay.md."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, NamedTuple

Z95 = 1.6448536269514722  # the standard normal's 95th percentile
# An engine model's step-time terms (what EngineModel.at_cpu_share scales).
STEP_TERMS = ("prefill_fixed_s", "prefill_per_token_s", "prefill_per_context_token_s", "decode_fixed_s",
              "decode_per_seq_s", "decode_per_context_token_s")
# ... and its time outside the steps (what bench/replay_grid.py --gateway scales, trying host figures).
OVERHEAD_TERMS = ("request_overhead_s", "frontend_service_s")


class PerfModelError(ValueError):
    """A model file that cannot be used (names the field)."""


@dataclass(frozen=True)
class EngineModel:
    """One engine replica: how long a step takes and how much KV it holds.

    A step decodes every running sequence, then prefills a chunk with the token budget left:
    prefill = fixed + per uncached token + per cached context token the new ones attend to;
    decode  = fixed + per running sequence + per context token read (K/V of the whole batch);
    a mixed step is one forward pass (local_engine/runner.py): one fixed cost, the larger, plus both parts.
    Defaults: SmolLM2-135M on this 2-core CPU (bf16, 2 torch threads, process core), from the
    measured figures in docs/benchmarks.md (2026-11-26); see docs/replay.md for the derivation.
    """

    source: str = "smollm2 on the 2-core CPU, docs/benchmarks.md 2026-11-26"
    prefill_fixed_s: float = 0.060  # a prefill step of a few tokens costs 45–70 ms here
    prefill_per_token_s: float = 0.00033  # ≈ 2 × 135M FLOP per token at ~0.8 TFLOP/s (2 threads × bf16 peak)
    prefill_per_context_token_s: float = 0.0
    decode_fixed_s: float = 0.0082  # batch 1: ITL 8.9 ms
    decode_per_seq_s: float = 0.00057  # batch 64, 39+64 tokens each: 52–55 ms per step
    decode_per_context_token_s: float = 2.3e-6  # 23 KB of K/V per token at ~10 GB/s
    block_size: int = 16
    num_blocks: int = 2912  # the CPU default KV pool: 1 GiB ÷ (16 × 23,040 B)
    kv_bytes_per_token: int = 23040  # 2 × 30 layers × 3 KV heads × 64 × 2 B (bf16)
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 2048  # the step's token budget while sequences are decoding
    max_idle_batched_tokens: int = 2048  # ... and with none decoding (a burst of new prompts)
    # Prompt tokens a step takes however many sequences decode (the engine's floor with its default
    # budget: 64 on CPU, where the budget is 64 too; 0 when --max-num-batched-tokens is set).
    prefill_floor_tokens: int = 0
    # While decodes run and two or more new prompts wait, a step may admit up to this many of their tokens
    # (the floor's per waiting prompt): the engine's --burst-batched-tokens, 256 by default, 0 off. Like the
    # engine's, it applies only with a floor (prefill_floor_tokens > 0: the default budget).
    burst_batched_tokens: int = 256
    max_model_len: int = 8192
    max_waiting: int = 256
    usd_per_hour: float = 0.0  # what one replica costs to run (0: already paid for)
    # Per-request time outside the engine's steps (HTTP, tokenizing, streaming in the server process):
    # it delays what the client sees but does not hold the engine, so it is not a step time.
    request_overhead_s: float = 0.0
    # ... plus a wait behind the requests ahead (every backend's) in a front end that takes each this long,
    # one at a time: the per-request work of the gateway, the engine server and the clients on a shared
    # host, which backs up when requests arrive faster. Fitted by `replay --calibrate`
    # (policies/replay/overhead_fit.py); the replay applies it.
    frontend_service_s: float = 0.0
    # The period of the gateway's polls of this engine as a recording's views show it (twice the views'
    # mean age when it routed: late answers and a busy gateway stretch the policy's poll_interval_s);
    # the replay's gateway then polls it on that clock (`replay --poll-clock`). 0: the policy's interval.
    state_poll_s: float = 0.0
    # The share of a core the engine's steps got while these step times were measured: its step thread's
    # CPU seconds ÷ the steps' wall seconds (/v1/engine/state's totals over the window); 0: not recorded.
    # A step's CPU seconds carry from one host load to another where its wall seconds do not (at_cpu_share).
    cpu_share: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name != "source" and (isinstance(value, bool) or value < 0):
                raise PerfModelError(f"engine.{f.name} must be a number ≥ 0, got {value!r}")
        for name in ("block_size", "num_blocks", "kv_bytes_per_token", "max_num_seqs", "max_num_batched_tokens",
                     "max_idle_batched_tokens", "max_model_len", "max_waiting"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise PerfModelError(f"engine.{name} must be an integer ≥ 1, got {getattr(self, name)!r}")

    def prefill_time(self, uncached_tokens: int, context_tokens: int = 0) -> float:
        """One prefill step computing `uncached_tokens` (all sequences in it together)."""
        return (self.prefill_fixed_s + self.prefill_per_token_s * uncached_tokens
                + self.prefill_per_context_token_s * context_tokens)

    def decode_time(self, num_seqs: int, context_tokens: int) -> float:
        """One decode step of `num_seqs` sequences holding `context_tokens` tokens in all (the ITL)."""
        return self.decode_fixed_s + self.decode_per_seq_s * num_seqs + self.decode_per_context_token_s * context_tokens

    def mixed_time(self, num_decodes: int, context_tokens: int, uncached_tokens: int, prefix_tokens: int = 0) -> float:
        """One mixed step: `num_decodes` sequences decoding and a chunk of `uncached_tokens` prompt tokens
        in ONE forward pass (the weights read once): the larger fixed cost once, then each part's own."""
        return (max(self.decode_fixed_s, self.prefill_fixed_s) + self.decode_per_seq_s * num_decodes
                + self.decode_per_context_token_s * context_tokens + self.prefill_per_token_s * uncached_tokens
                + self.prefill_per_context_token_s * prefix_tokens)

    def decode_run_time(self, num_seqs: int, context_tokens: int, num_steps: int) -> float:
        """`num_steps` decode steps of the same batch; its context grows by `num_seqs` each step."""
        first = self.decode_time(num_seqs, context_tokens)
        return num_steps * first + self.decode_per_context_token_s * num_seqs * num_steps * (num_steps - 1) / 2

    def at_cpu_share(self, share: float) -> EngineModel:
        """These step times carried to a window whose steps got `share` of a core: each step term ×
        cpu_share ÷ share (the same CPU seconds a step); the time outside the steps (request overhead, the
        front end) unchanged. Raises PerfModelError without a recorded cpu_share or with a share ≤ 0."""
        if not self.cpu_share > 0:
            raise PerfModelError("engine.cpu_share is not recorded: fit the model with `replay --calibrate "
                                 "--engine-share NAME=SHARE` (the share its window had) to carry it to another")
        if not share > 0:
            raise PerfModelError(f"an engine's CPU share must be > 0, got {share!r}")
        k = self.cpu_share / share
        return replace(self, cpu_share=share, **{n: getattr(self, n) * k for n in STEP_TERMS},
                       source=f"{self.source}; steps × {k:.3g} (CPU share {self.cpu_share:g} → {share:g})")

    @property
    def kv_capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def kv_pool_bytes(self) -> int:
        return self.kv_capacity_tokens * self.kv_bytes_per_token

    def prefill_tokens_per_s(self) -> float:
        """Nominal prefill rate of a full token budget (what the engine's state would report)."""
        return self.max_num_batched_tokens / self.prefill_time(self.max_num_batched_tokens)

    def decode_tokens_per_s(self, num_seqs: int, context_per_seq: int) -> float:
        return num_seqs / self.decode_time(num_seqs, num_seqs * context_per_seq)


@dataclass(frozen=True)
class HostedModel:
    """A hosted model as the gateway sees it: TTFT lognormal (p50, p95), decode speed lognormal
    (p50 and p05 of tokens/s) and a requests-per-minute limit (0: none). Defaults are ASSUMPTIONS
    (typical small hosted models, e.g. gpt-4o-mini, 2025), not measurements: set your own."""

    source: str = "assumed: typical small hosted model, not measured"
    ttft_p50_s: float = 0.45
    ttft_p95_s: float = 1.2
    tokens_per_s_p50: float = 80.0
    tokens_per_s_p05: float = 40.0
    requests_per_minute: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.ttft_p50_s <= self.ttft_p95_s:
            raise PerfModelError(f"hosted: need 0 < ttft_p50_s ≤ ttft_p95_s, got {self.ttft_p50_s}, {self.ttft_p95_s}")
        if not 0 < self.tokens_per_s_p05 <= self.tokens_per_s_p50:
            raise PerfModelError("hosted: need 0 < tokens_per_s_p05 ≤ tokens_per_s_p50")
        if isinstance(self.requests_per_minute, bool) or not isinstance(self.requests_per_minute, int) \
                or self.requests_per_minute < 0:
            raise PerfModelError(f"hosted.requests_per_minute must be an integer ≥ 0, got {self.requests_per_minute!r}")

    def ttft(self, z: float) -> float:
        """The TTFT at standard-normal draw `z` (z = 0: the median, z = 1.645: p95)."""
        return self.ttft_p50_s * math.exp(z * math.log(self.ttft_p95_s / self.ttft_p50_s) / Z95)

    def tokens_per_s(self, z: float) -> float:
        """Decode speed at draw `z` (z = -1.645: the p05)."""
        return self.tokens_per_s_p50 * math.exp(z * math.log(self.tokens_per_s_p50 / self.tokens_per_s_p05) / Z95)


class Prediction(NamedTuple):
    """One request on one backend, now: when its first token and its last arrive (seconds).
    A NamedTuple, not a frozen dataclass: it is built per candidate per request (2 µs less each)."""

    ttft_s: float
    e2e_s: float


def predict_engine(model: EngineModel, *, prompt_tokens: int, output_tokens: int, cached_tokens: int = 0,
                   queued_prompt_tokens: int = 0, num_running: int = 0, running_context_tokens: int = 0,
                   decode_step_s: float | None = None, prefill_token_s: float | None = None) -> Prediction:
    """TTFT (engine_ttft) and E2E, which adds this request's decode steps in a batch one larger."""
    ttft = engine_ttft(model, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens,
                       queued_prompt_tokens=queued_prompt_tokens, num_running=num_running,
                       running_context_tokens=running_context_tokens, decode_step_s=decode_step_s,
                       prefill_token_s=prefill_token_s)
    batch = min(model.max_num_seqs, num_running + 1)
    step = model.decode_time(batch, running_context_tokens + prompt_tokens + output_tokens // 2)
    return Prediction(ttft, ttft + max(0, output_tokens - 1) * step)


def engine_ttft(model: EngineModel, *, prompt_tokens: int, cached_tokens: int = 0, queued_prompt_tokens: int = 0,
                num_running: int = 0, running_context_tokens: int = 0, decode_step_s: float | None = None,
                prefill_token_s: float | None = None) -> float:
    """TTFT as the engine schedules (local_engine/scheduler.py): the step in progress, then steps that
    each decode every running sequence (one token of the budget each) and prefill a chunk of the
    queue ahead and this prompt's uncached tokens with the budget left, or the burst budget while two or
    more prompts wait (_mixed_steps); an idle engine prefills a burst in one step (the idle budget). Rates measured now beat the model's: `decode_step_s` (the
    running batch's step) and `prefill_token_s` (prefill seconds per token, its fixed cost spread
    over the chunks it ran)."""
    uncached = max(0, prompt_tokens - cached_tokens)
    prefill = queued_prompt_tokens + uncached
    if num_running:
        decode = decode_step_s if decode_step_s is not None else model.decode_time(num_running, running_context_tokens)
        chunk = max(1, model.max_num_batched_tokens - num_running, model.prefill_floor_tokens)
        steps = _mixed_steps(model, prefill, chunk, max(1, prompt_tokens))
        waiting = (1 + steps) * decode  # the step in progress, then the mixed ones
    else:
        steps = max(1, math.ceil(prefill / max(model.max_num_batched_tokens, model.max_idle_batched_tokens)))
        waiting = 0.0
    if prefill_token_s is not None:
        waiting += prefill_token_s * prefill
    elif num_running:  # each mixed step is one pass: its fixed cost beyond the decode's is the only extra
        waiting += steps * max(0.0, model.prefill_fixed_s - model.decode_fixed_s) + model.prefill_per_token_s * prefill
    else:
        waiting += steps * model.prefill_fixed_s + model.prefill_per_token_s * prefill
    return model.request_overhead_s + waiting + model.prefill_per_context_token_s * cached_tokens


def _mixed_steps(model: EngineModel, prefill: int, chunk: int, size: int) -> int:
    """Steps beside running decodes until `prefill` tokens are taken, `chunk` a step; with the engine's burst
    budget (a floor and burst_batched_tokens), while two or more prompts have not started — the queue taken
    as prompts of `size` tokens, as LiveState counts it — up to min(burst, floor × those prompts) a step."""
    burst = model.burst_batched_tokens if model.prefill_floor_tokens else 0
    prompts = math.ceil(prefill / size)
    if prompts < 2 or burst <= chunk:
        return max(1, math.ceil(prefill / chunk))
    steps = taken = 0
    while taken < prefill:
        waiting = prompts - math.ceil(taken / size)  # not started: the engine's `waiting`
        if waiting < 2:
            return steps + math.ceil((prefill - taken) / chunk)
        taken += max(chunk, min(burst, model.prefill_floor_tokens * waiting))
        steps += 1
    return steps


def predict_hosted(model: HostedModel, output_tokens: int, z: float = Z95) -> Prediction:
    """At quantile `z` of both distributions (default: the p95 TTFT and the p05 speed)."""
    ttft = model.ttft(z)
    return Prediction(ttft, ttft + max(0, output_tokens - 1) / model.tokens_per_s(-z))


@dataclass(frozen=True)
class PerfModel:
    """Models by backend name; `default_engine` / `default_hosted` for backends not named."""

    engines: Mapping[str, EngineModel]
    hosted: Mapping[str, HostedModel]
    default_engine: EngineModel = EngineModel()
    default_hosted: HostedModel = HostedModel()

    def engine(self, backend: str) -> EngineModel:
        return self.engines.get(backend, self.default_engine)

    def hosted_model(self, backend: str) -> HostedModel:
        return self.hosted.get(backend, self.default_hosted)


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise PerfModelError(f"{where} must be a mapping of fields, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise PerfModelError(f"{where}: unknown field {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
    for name, value in data.items():
        expected = type(getattr(cls(), name))
        ok = isinstance(value, str) if expected is str else \
            isinstance(value, (int, float)) and not isinstance(value, bool) and (expected is float or isinstance(value, int))
        if not ok:
            raise PerfModelError(f"{where}.{name} must be {expected.__name__}, got {value!r}")
    try:
        return replace(cls(), **{k: (float(v) if known[k].type in ("float", float) else v) for k, v in data.items()})
    except PerfModelError as exc:
        raise PerfModelError(f"{where}: {exc}") from None


def perf_model_from_mapping(data: Any) -> PerfModel:
    """The model file's contents: {engines: {NAME|default: {...}}, hosted: {NAME|default: {...}}}."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise PerfModelError("a performance model file is a mapping with `engines` and/or `hosted`")
    extra = sorted(set(data) - {"engines", "hosted"})
    if extra:
        raise PerfModelError(f"unknown top-level field {extra[0]!r}; allowed: engines, hosted")
    engines = {name: _build(EngineModel, spec, f"engines.{name}") for name, spec in (data.get("engines") or {}).items()}
    hosted = {name: _build(HostedModel, spec, f"hosted.{name}") for name, spec in (data.get("hosted") or {}).items()}
    return PerfModel(engines, hosted, engines.pop("default", EngineModel()), hosted.pop("default", HostedModel()))
