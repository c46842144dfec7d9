"""`hybridgw bench --profile URL`: a short profiling schedule against one engine (or a gateway that
routes the model to one) — TTFT of single requests at several uncached prompt lengths, ITL of
batches at several sizes and contexts — fitted into a performance model file that a policy names
(`backends.B.perf_model`) and that `hybridgw replay` / `size` read (policies/perf_model.py)."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from observability.bench.client import Client, Sent, Target
from observability.bench.profile_fit import DecodePoint, FitError, PrefillPoint, fit_decode, fit_prefill
from observability.bench.prompts import PromptBuilder
from observability.bench.records import RequestRecord

# What /v1/engine/state says that the model file keeps (state name → model field).
STATE_FIELDS = {"block_size": "block_size", "num_blocks_total": "num_blocks", "kv_bytes_per_token": "kv_bytes_per_token",
                "max_num_seqs": "max_num_seqs", "max_model_len": "max_model_len", "max_waiting": "max_waiting"}


@dataclass(frozen=True)
class Schedule:
    prompt_lengths: tuple[int, ...] = (16, 128, 512, 1024)
    repeats: int = 3  # per prompt length; the median is kept
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    contexts: tuple[int, ...] = (32, 512)  # prompt tokens of each sequence in a decode batch
    decode_tokens: int = 32
    budget_probe_tokens: int = 1024  # a prompt sent while one stream decodes (0: no probe)


@dataclass(frozen=True)
class Profile:
    model: dict[str, Any]  # EngineModel's fields
    prefill: tuple[PrefillPoint, ...]
    decode: tuple[DecodePoint, ...]
    backends: frozenset[str]  # x-hybridgw-backend values seen (a gateway that spilled: not one engine)


class ProfileError(Exception):
    """The profile could not be measured or fitted; the message says why."""


def _body(model: str, text: str, max_tokens: int) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
                         "stream": True, "stream_options": {"include_usage": True},
                         "ignore_eos": True, "min_tokens": max_tokens})


def _sent(model: str, text: str, isl: int, max_tokens: int, api_key: str | None, index: int) -> Sent:
    return Sent(_body(model, text, max_tokens), api_key, RequestRecord(index, "profile", "profile", isl, max_tokens, 0, 0))


def _failed(records: Sequence[RequestRecord]) -> str | None:
    bad = [r for r in records if not r.ok]
    return f"{bad[0].error}: {bad[0].error_detail}" if bad else None


class Profiler:
    """Runs the schedule through one client; each prompt is new random words, so nothing is cached."""

    def __init__(self, client: Client, builder: PromptBuilder, model: str, api_key: str | None, seed: int) -> None:
        self.client, self.builder, self.model, self.api_key = client, builder, model, api_key
        self.rng = random.Random(seed)
        self.t0 = time.perf_counter()
        self.records: list[RequestRecord] = []
        self._index = 0

    async def _batch(self, isl: int, max_tokens: int, num: int) -> list[RequestRecord]:
        sents = []
        for _ in range(num):
            sents.append(_sent(self.model, self.builder.text(isl, self.rng), isl, max_tokens, self.api_key, self._index))
            self._index += 1
        done = await asyncio.gather(*(self.client.send(s, self.t0) for s in sents))
        self.records += done
        return list(done)

    async def prefill(self, schedule: Schedule) -> list[PrefillPoint]:
        await self._batch(schedule.prompt_lengths[0], 2, 1)  # warm-up: first-call costs are no prefill's
        points = []
        for isl in schedule.prompt_lengths:
            runs = [r for _ in range(schedule.repeats) for r in await self._batch(isl, 1, 1) if r.ok and r.chunk_s]
            if runs:
                tokens = runs[0].prompt_tokens or isl
                points.append(PrefillPoint(tokens, statistics.median(r.chunk_s[0] - r.send_s for r in runs)))
        return points

    async def decode(self, schedule: Schedule, budget: int | None) -> list[DecodePoint]:
        """Each batch decodes long enough to have a window with all its streams past their prefill
        (which, at a step budget of `budget`, takes B × prompt ÷ (budget − B) steps)."""
        points = []
        for isl in schedule.contexts:
            for num in schedule.batch_sizes:
                prefill_steps = math.ceil(num * (isl + 64) / max(1, budget - num)) if budget else 0
                max_tokens = schedule.decode_tokens + min(prefill_steps, 256)
                runs = [r for r in await self._batch(isl, max_tokens, num) if r.ok and len(r.chunk_s) > 1]
                point = _decode_point(runs) if len(runs) == num else None
                if point is not None:
                    points.append(point)
        return points

    async def budget(self, prompt_tokens: int, lead_s: float) -> int | None:
        """The step's token budget while a sequence decodes: a long prompt sent to an engine that is
        decoding one stream is prefilled in chunks of (budget − 1), one per step, and the stream gets
        one token each step; so the budget ≈ prompt / (the stream's tokens meanwhile) + 1. None when
        the prompt went in one step (the budget is at least the prompt: keep the model's)."""
        steps_max = prompt_tokens // 16 + 48  # the stream must outlast the chunked prefill (budget ≥ 16)
        stream = asyncio.create_task(self._batch(16, steps_max, 1))
        await asyncio.sleep(lead_s)  # its prefill done and a few tokens out
        probe = (await self._batch(prompt_tokens, 1, 1))[0]
        running = (await stream)[0]
        if not (probe.ok and running.ok and probe.chunk_s and running.chunk_s) or running.chunk_s[0] > probe.send_s:
            return None
        first, last = probe.send_s, probe.chunk_s[0]
        steps = sum(1 for t in running.chunk_s if first < t <= last)
        if steps <= 1 or running.chunk_s[-1] <= last:
            return None
        return math.ceil((probe.prompt_tokens or prompt_tokens) / steps) + 1


def _decode_point(runs: Sequence[RequestRecord]) -> DecodePoint | None:
    """The median gap while every stream of the batch was past its first token and not yet done
    (before: prefills of the later arrivals share the steps; after: the batch is shrinking); None
    when there was no such window. The context is the batch's at the window's middle."""
    start, end = max(r.chunk_s[0] for r in runs), min(r.chunk_s[-1] for r in runs)
    gaps = [b - a for r in runs for a, b in zip(r.chunk_s, r.chunk_s[1:]) if a >= start and b <= end]
    if not gaps:
        return None
    middle = (start + end) / 2
    context = sum((r.prompt_tokens or r.isl) + sum(1 for t in r.chunk_s if t < middle) for r in runs)
    return DecodePoint(len(runs), context, statistics.median(gaps))


def profile(target: Target, headers: dict[str, str], api_key: str | None, model: str, builder: PromptBuilder,
            schedule: Schedule, state: dict[str, Any] | None, timeout_s: float, seed: int = 0) -> Profile:
    """Measure and fit; ProfileError when too little could be measured."""
    client = Client(target, headers, timeout_s)

    async def measure() -> tuple[list[PrefillPoint], list[DecodePoint], int | None, Profiler]:
        profiler = Profiler(client, builder, model, api_key, seed)
        try:
            prefill = await profiler.prefill(schedule)
            lead = 6 * (prefill[0].ttft_s if prefill else 0.5)  # the stream's prefill and a few steps
            budget = await profiler.budget(schedule.budget_probe_tokens, lead) if schedule.budget_probe_tokens else None
            return prefill, await profiler.decode(schedule, budget), budget, profiler
        finally:
            client.close()

    prefill, decode, budget, profiler = asyncio.run(measure())
    try:
        fitted: dict[str, float | int] = {**fit_prefill(prefill), **fit_decode(decode)}
        if budget is not None:
            fitted["max_num_batched_tokens"] = budget
    except FitError as exc:
        failure = _failed(profiler.records)
        raise ProfileError(f"{exc}" + (f"; requests failed, e.g. {failure}" if failure else "")) from None
    kept = {STATE_FIELDS[k]: v for k, v in (state or {}).items() if k in STATE_FIELDS and isinstance(v, int) and v > 0}
    source = f"hybridgw bench --profile {target.host}:{target.port} model {model}, " + time.strftime(
        "%Y-%m-%d %H:%M UTC", time.gmtime())
    fields = {"source": source, **{k: v if isinstance(v, int) else round(v, 9) for k, v in fitted.items()}, **kept}
    bad = next((k for k, v in fitted.items() if not (math.isfinite(v) and v >= 0)), None)
    if bad is not None:  # what the policy loader would refuse (the format's test: test_profile_fit.py)
        raise ProfileError(f"the fitted model does not validate: {bad} = {fitted[bad]}")
    backends = frozenset(r.backend for r in profiler.records if r.backend)
    return Profile(fields, tuple(prefill), tuple(decode), backends)


def render_model_file(result: Profile, name: str) -> str:
    """The model file: YAML that policies.perf_model reads, the measurements as comments."""
    lines = ["# Performance model written by `hybridgw bench --profile` (policies/perf_model.py reads it).",
             "# Prefill (idle engine, one request): prompt tokens → TTFT s"]
    lines += [f"#   {p.prompt_tokens:>6} → {p.ttft_s:.4f}" for p in result.prefill]
    lines.append("# Decode (all streams running): batch, batch context tokens → ITL s")
    lines += [f"#   {p.num_seqs:>4}, {p.context_tokens:>7} → {p.itl_s:.4f}" for p in result.decode]
    lines.append("# Fields not listed keep the defaults of EngineModel (policies/perf_model.py).")
    body = yaml.safe_dump({"engines": {name: result.model}}, sort_keys=False, allow_unicode=True, width=1000)
    return "\n".join(lines) + "\n" + body


def write_model_file(path: Path, result: Profile, name: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_model_file(result, name), encoding="utf-8")
