"""A small seeded recording replayed against the embedded default policy (slo_cost over the CPU
engine + hosted): every request's outcome and the summary (costs, shares, percentiles) are pinned
to what main's code gave before decide() and its dataclasses were made cheaper (5e16ca8; re-pinned at
the liveview merge, whose queue estimate changes decisions on purpose: its tree gives the same digest;
re-pinned when a mixed step became one forward pass, as the engine runs it: its cost changes on purpose;
and when the simulated engine reported its measured prefill rate, as the real one does: the router's view changes;
and when slo_cost priced the queue as LiveState.queued_prompt_tokens does, work-off included; and when the
replay's gateway learned an engine's ends as they happen, not at its next send: its in-flight count changes
on purpose, 1381 → 1382 served locally here). The engine's burst budget (2026-12-02) leaves it as it
was: the default model has no prefill floor, and the engine keeps a burst only with one. Re-pinned when the
simulated engine's state counted what a running step took as waiting, as the engine publishes it between
steps (session 11): the router's view changes on purpose, 1382 → 1401 served locally here. Re-pinned when the
hosted TTFTs were drawn stratified (policies/replay/stratified.py, session 12): the hosted timings change on
purpose, the routing not (1401 served locally here)."""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path

from policies.compiled import compile_policy
from policies.loader import load_default_policy
from policies.perf_model import perf_model_from_mapping
from policies.replay.simulator import ReplaySetup, replay
from policies.replay.summary import summarize
from policies.replay.traffic import read_jsonl

# A litellm-style price so the hosted side has a cost (no price table is read in tests).
PRICES = {"gpt-4o-mini": {"input_cost_per_token": 1.5e-7, "output_cost_per_token": 6e-7}}
# sha1 over every request's (backend, refusal, rule, cost, ttft, e2e) and the summary, from main's code; a
# change that means to alter replay results re-pins it (python -c "…replay_digest(Path(tmp))").
PINNED = "f7efa5347ddc4b76102d249a1c5f46da00e4345c"


def _traffic(path: Path) -> list:
    """Ten minutes at 10 requests/s, seeded, with bench/replay_speed.py's prompt and output shapes."""
    rng, t = random.Random(3), 1764547200.0
    with path.open("w") as out:
        while t < 1764547200.0 + 600:
            t += rng.expovariate(10.0)
            out.write(json.dumps({"time": round(t, 4), "team": "default", "model": "smollm2",
                                  "prompt_tokens": min(6000, int(rng.lognormvariate(6.0, 0.8))) + 1,
                                  "output_tokens": min(1000, int(rng.lognormvariate(4.8, 0.7))) + 1}) + "\n")
    return read_jsonl(path)


def replay_digest(tmp: Path) -> tuple[str, object]:
    loaded = load_default_policy({"OPENAI_API_KEY": "set-for-replay"})
    traffic = _traffic(tmp / "traffic.jsonl")
    perf = perf_model_from_mapping({})
    out = replay(loaded, traffic, ReplaySetup(perf, PRICES))
    summary = replace(summarize("default", compile_policy(loaded.policy, PRICES), traffic, out, perf, None),
                      sim_seconds=0.0)
    text = repr((out.backend, out.refusal, out.rule, out.cost, out.ttft, out.e2e, out.engine_busy_s, summary))
    return hashlib.sha1(text.encode()).hexdigest(), summary


def test_the_replay_of_a_small_recording_is_main_s_byte_for_byte(tmp_path: Path) -> None:
    digest, summary = replay_digest(tmp_path)
    assert summary.served_by.get("local", 0) > 100 and summary.served_by.get("openai", 0) > 100  # both used
    assert digest == PINNED
