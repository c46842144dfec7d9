"""What `bench/replay_vs_real.py` reads from the engine itself: its state (GET /v1/engine/state), the
step budget it runs with by default, its own step rates and the state's latency during the run, and the
run's engine speed (its decode step and the share of a core its steps got) that replay --engine-speed takes."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from statistics import median
from typing import Any

from local_engine.config import CPU_TOKEN_BUDGET, GPU_TOKEN_BUDGET, EngineConfig
from observability.bench.profile_fit import fit_line


def engine_state(engine: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{engine}/v1/engine/state", timeout=5) as r:
        return json.loads(r.read())


def default_budget(device: str, max_num_seqs: int) -> dict[str, int]:
    """The step's token budget the engine runs with when none is set (local_engine/config.py): on CPU 64
    tokens, and however many sequences decode, 64 prompt tokens more. Without it the replay's engine took
    whole prompts in a step (the model's default budget, 2048) and never queued the busy period's
    arrivals, which the real one's spans show waiting 0.5 s at the median (docs/benchmarks.md). And its burst
    budget (the engine's default, as this bench starts it): the model file names it, so a replay of the
    recording knows what its engine ran with (one that does not name it predates the burst: 0)."""
    default = CPU_TOKEN_BUDGET if device.startswith("cpu") else GPU_TOKEN_BUDGET
    return {"max_num_batched_tokens": max(default, max_num_seqs), "prefill_floor_tokens": default,
            "burst_batched_tokens": EngineConfig.burst_batched_tokens}


def recorded_burst(run: Path) -> int:
    """The burst budget a kept run's engine had: its perf.json names it (default_budget, since 2026-12-02);
    a run kept before names none, and its engine had none: 0. Replays of kept runs give it to the replay
    (`--burst-batched-tokens`), whose own default for a model file that does not say is the engine's 256."""
    return json.loads((run / "perf.json").read_text())["engines"]["local"].get("burst_batched_tokens", 0)


class StatePoller:
    """Reads the engine's own step rates every second during the run (a thread; diagnostic only), and how
    long each GET /v1/engine/state took: the gateway's view of the engine is at least that old."""

    def __init__(self, engine: str) -> None:
        self.engine, self.samples, self.latencies_s = engine, [], []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(1.0):
            asked = time.perf_counter()
            try:
                self.samples.append(engine_state(self.engine))
            except OSError:
                continue
            self.latencies_s.append(time.perf_counter() - asked)

    def __enter__(self) -> StatePoller:
        self.first = engine_state(self.engine)  # the step totals at the run's start
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.last = engine_state(self.engine)


def run_speed(first: dict[str, Any], last: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The engine's own speed over the run (no figure of the routing's outcome): the share of a core its
    steps got (step-thread CPU seconds ÷ wall seconds, from its lifetime totals at the start and the end),
    its mean step, and its decode step at batch 16 from the rates it reported (in_run_model's line)."""
    steps = last.get("num_steps_total", 0) - first.get("num_steps_total", 0)
    wall = last.get("step_seconds_total", 0.0) - first.get("step_seconds_total", 0.0)
    cpu = last.get("step_cpu_seconds_total", 0.0) - first.get("step_cpu_seconds_total", 0.0)
    decode = [(s["num_running"], s["num_running"] / s["decode_tokens_per_s"]) for s in samples
              if s["num_running"] and s["decode_tokens_per_s"]]
    line = fit_line(decode) if len({b for b, _ in decode}) >= 2 else None
    return {"steps": steps, "step_wall_s": round(wall, 6), "step_cpu_s": round(cpu, 6),
            "cpu_share": round(cpu / wall, 4) if wall > 0 else None,
            "mean_step_s": round(wall / steps, 6) if steps else None,
            "decode_step_16_s": round(line[0] + 16 * line[1], 6) if line else None}


def in_run_model(profiled: dict[str, Any], samples: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The profiled model with the step times the engine itself reported DURING the run (its rates
    over its last 10 s, sampled each second; decode step = running / rate). A diagnostic: replaying
    with it separates the simulator's own error from the profile's (the engine's speed on this
    shared machine differs between the profile and the run)."""
    decode = [(s["num_running"], s["num_running"] / s["decode_tokens_per_s"]) for s in samples
              if s["num_running"] and s["decode_tokens_per_s"]]
    prefill = [1.0 / s["prefill_tokens_per_s"] for s in samples if s["prefill_tokens_per_s"]]
    if len({b for b, _ in decode}) < 2 or not prefill:
        return None
    fixed, per_seq = fit_line(decode)
    return {**profiled, "source": "step times the engine reported during the run (diagnostic)",
            "prefill_fixed_s": 0.0, "prefill_per_token_s": median(prefill), "decode_fixed_s": fixed,
            "decode_per_seq_s": per_seq}
