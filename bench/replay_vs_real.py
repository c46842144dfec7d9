"""Is the replay simulator right? Runs real traffic through `hybridgw serve` (a kv_fit policy: the
local engine on this CPU, spill to the SIMULATED hosted API tests/fakes/hosted_sim.py), then replays
the gateway's own usage ledger for that window with the same policy, and prints measured vs predicted.

1. profile: the engine alone through the gateway, one request at a time at two prompt lengths (TTFT)
   and a burst decoding together (ITL) -> a performance model (observability/bench/profile_fit.py); the
   hosted model is hosted_sim's gpt-4o-mini profile, converted (hosted_from_sim);
2. measure: `hybridgw bench` (mixed preset, Poisson arrivals) through the gateway, the engine's own
   step rates sampled meanwhile;
3. predict: `hybridgw replay POLICY --ledger usage.sqlite3 --since T0 --until T1 --perf-model M`, and
   once more with the step times the engine reported during the run (a diagnostic, not a prediction).
   With --bench-profile, also `hybridgw bench --profile` through the gateway before the run, its model
   file named by the policy (`backends.local.perf_model`, policies/perf_model_file.py) and replayed.

    .venv/bin/python bench/replay_vs_real.py [--engine-model tiny-random] [--schedule 12:10,1:10]
        [--duration 20] [--length-scale 0.05] [--profile-batch 32] [--bench-profile] [--keep DIR] [--json FILE]
        [--seed 1] [--spans]

With --keep, DIR also gets window.json and calibrated-model.json (`replay --calibrate --calibrate-out`):
bench/replay_cross.py predicts one kept run with another's fitted model (a check on unseen traffic).
window.json's `host`: the gateway's CPU and the host's CPU pressure over the run (replay_host_share.py).
With --spans, the engine's spans break the local TTFTs into phases (bench/replay_breakdown.py); with
--keep too, DIR gets engine.log (the spans: bench/replay_intake.py splits the engine's queue wait).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hybrid_economics import is_ready, run_cli
from bench.replay_breakdown import breakdown, engine_spans, read_ledger_rows
from bench.replay_breakdown import table as breakdown_table
from bench.replay_engine_state import StatePoller, default_budget, engine_state, in_run_model, run_speed
from bench.replay_host_share import HealthProbe, host_share, sample
from observability.bench.profile_fit import EngineProfile, fit_engine, hosted_from_sim
from tests.fakes.hosted_profiles import PROFILES
from tests.support import procs

HOSTED_MODEL = "gpt-4o-mini"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"  # sampled: the engine records spans
POLICY = """version: 1
backends:
  local: {{kind: engine, model: {model}, base_url: '{engine}/v1', max_waiting: {max_waiting},
          price: {{usd_per_gpu_hour: {gpu_hour}}}}}
  openai: {{kind: openai, base_url: '{hosted}/v1', api_key_env: OPENAI_API_KEY}}
models:
  chat:
    deployments:
      - {{backend: local, model: {model}}}
      - {{backend: openai, model: {hosted_model}}}
  local-only:  # the profile's requests: the engine alone, through this gateway
    deployments:
      - {{backend: local, model: {model}}}
teams:
  alpha: {{}}
  beta: {{}}
rules:
  - {{name: profile, when: {{model: local-only}}, route: [local]}}
  - {{name: local-then-spill, strategy: kv_fit, local: [local], spill: [openai]}}
"""


def bench(url: str, out: Path, *args: str) -> dict[str, Any]:
    run_cli(*procs.hybridgw("bench", url, "--no-progress", "--timeout", "60", "--seed", "1", "--out", str(out), *args))
    return json.loads((out / "results.json").read_text())


def _ok(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in body["requests"] if not r["warmup"] and r["error"] is None and r["ttft_s"] is not None]


def profile_engine(url: str, key: str, engine: str, tmp: Path, a: argparse.Namespace) -> dict[str, Any]:
    """Step-time terms of the engine from three short runs sent to it alone THROUGH THE GATEWAY (after
    two warm-up requests): single requests at a short and a long prompt (their TTFT is the prefill step),
    and `batch` requests at once (after their prefills they decode together, nothing else arriving).

    Medians of the client's figures: on this shared machine single TTFTs of the same prompt ranged
    12-400 ms. Tried and dropped: the engine's own step rates (/v1/engine/state) are means over its
    last 10 s and took in the cold first steps; the mean ITL of a closed loop at concurrency 8
    includes the stalls of replacements' prefills (21 ms per sequence; E2E predicted 4x too long).
    The long prompt is near the top of the workload's (a prefill's cost per token grows with the
    prompt: a line through 62 and 798 tokens overstated it for the workload's 20-150-token prompts),
    the batch near the busy period's (a line through batch 1 and 8 overstated the per-sequence cost).
    Through the gateway, because on two shared cores the engine's steps slow down with the work of
    the processes around it (the gateway relaying every token, the client parsing them): profiled
    directly, the same engine stepped 3-10x faster than while serving the run."""
    n, long_isl, batch = a.profile_requests, a.profile_long_isl, a.profile_batch
    common = ("--model", "local-only", "--api-key", key, "--ignore-eos")
    short = _ok(bench(url, tmp / "p-short", *common, "--isl", "fixed:32", "--osl", "fixed:32", "--requests",
                      str(n), "--warmup", "2"))
    long_ = _ok(bench(url, tmp / "p-long", *common, "--isl", f"fixed:{long_isl}", "--osl", "fixed:1",
                      "--requests", str(max(3, n * 3 // 4))))
    burst = _ok(bench(url, tmp / "p-batch", *common, "--isl", "fixed:32", "--osl", "fixed:64", "--requests",
                      str(batch), "--concurrency", str(batch)))
    state = engine_state(engine)
    ttfts = [(r["prompt_tokens"], r["ttft_s"]) for r in short + long_]
    itl1 = median(r["itl_mean_s"] for r in short if r["itl_mean_s"])
    itl_batch = median(r["itl_mean_s"] for r in burst if r["itl_mean_s"])
    fitted = fit_engine(EngineProfile(ttfts, (1.0, itl1), (float(len(burst)), itl_batch)))
    shape = {k: state[k] for k in ("block_size", "kv_bytes_per_token", "max_model_len", "max_num_seqs", "max_waiting")}
    shape.update(default_budget(state["device"], state["max_num_seqs"]))
    return {"source": f"{a.engine_model} on this CPU through the gateway, profiled {time.strftime('%Y-%m-%d %H:%M')} by bench/replay_vs_real.py",
            **fitted, **shape, "num_blocks": state["num_blocks_total"]}


def bench_profile(url: str, key: str, out: Path) -> None:
    """`hybridgw bench --profile` through the gateway (the model routed to the engine alone), its
    schedule cut to the workload's range (prompts ≤ ~150 engine tokens, batches up to the busy period's)."""
    run_cli(*procs.hybridgw("bench", url, "--profile", "--model", "local-only", "--api-key", key, "--no-progress",
                            "--profile-out", str(out), "--profile-name", "local", "--profile-lengths", "16,64,160",
                            "--profile-batches", "1,8,32", "--profile-contexts", "32,128", "--profile-budget-probe", "256",
                            "--timeout", "60"))


def hosted_only() -> dict[str, Any]:
    """The hosted half of perf_model(): with it as --perf-model, the engine's model is the policy's file."""
    return {"hosted": perf_model({})["hosted"]}


def perf_model(engine_model: dict[str, Any]) -> dict[str, Any]:
    p = PROFILES[HOSTED_MODEL]
    hosted = hosted_from_sim(p.ttft_median_s, p.ttft_p90_s, p.tokens_per_s, p.tokens_per_s_sd)
    return {"engines": {"local": engine_model},
            "hosted": {"openai": {"source": f"hosted_sim's {HOSTED_MODEL} profile (simulated)", **hosted}}}


def measure(a: argparse.Namespace, policy: Path, data: Path, keys: list[str],
            engine: str) -> tuple[dict[str, Any], dict[str, Any], float, float]:
    """Profile the engine through the gateway, then the bench run; its results, the engine's
    model and the run's window (unix seconds)."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"OPENAI_API_KEY": "simulated", "HYBRIDGW_DATA_DIR": str(data)}
    serve = procs.hybridgw("serve", "--config", str(policy), "--port", str(port), "--data-dir", str(data))
    with procs.running(serve, f"{url}/healthz", env=env, name="serve", timeout_s=120, cwd=ROOT) as gateway:
        procs.wait_until(lambda: is_ready(url), "gateway ready", wait_s=120, every_s=0.5)
        model = profile_engine(url, keys[0], engine, data.parent, a)
        if a.bench_profile:
            bench_profile(url, keys[0], data.parent / "bench-profile.yaml")
        time.sleep(1.5)  # the profile's last records fall before the window
        t0, host0 = time.time(), sample(gateway.pid)
        with StatePoller(engine) as poller, HealthProbe(url) as probe:
            traced = ("--header", f"traceparent:{TRACEPARENT}") if a.spans else ()
            body = bench(url, data / "bench", "--model", "chat", *(f"--api-key={t}={k}" for t, k in zip(a.teams, keys)),
                         "--preset", "mixed", "--length-scale", str(a.length_scale), "--rate-schedule", a.schedule,
                         "--requests", "100000", "--duration", str(a.duration), "--warmup", "0", "--seed", str(a.seed),
                         *traced)
        t1, host = time.time(), host_share(host0, sample(gateway.pid)) | probe.figures()
    model["in_run"] = in_run_model(model, poller.samples)
    model["host"] = host  # the gateway's CPU and delay, the host's pressure (bench/replay_host_share.py)
    model["state_latency_s"] = sorted(poller.latencies_s)
    model["engine_speed"] = run_speed(poller.first, poller.last, poller.samples)
    return body, model, t0 - 0.5, t1 + 1.0  # the gateway stopped (ledger flushed) before replay reads it


def compare(measured: dict[str, Any], replayed: dict[str, Any]) -> list[tuple[str, float | None, float | None, str]]:
    """(figure, measured, predicted, how far): TTFT p50/p95 by the bench client, local share, cost."""
    recorded, predicted = replayed["policies"][0], replayed["policies"][1]
    s = measured["summary"]

    def share(summary: dict[str, Any]) -> float:
        return summary["served_by"].get("local", 0) / max(1, summary["requests"])

    rows = [("TTFT p50 s (bench client)", s["ttft"]["p50"], predicted["ttft_s"]["p50"]),
            ("TTFT p95 s (bench client)", s["ttft"]["p95"], predicted["ttft_s"]["p95"]),
            ("TTFT p50 s (gateway ledger)", recorded["ttft_s"]["p50"], predicted["ttft_s"]["p50"]),
            ("TTFT p95 s (gateway ledger)", recorded["ttft_s"]["p95"], predicted["ttft_s"]["p95"]),
            ("local share", share(recorded), share(predicted)),
            ("hosted cost $", recorded["hosted_cost_usd"], predicted["hosted_cost_usd"]),
            ("total cost $", recorded["total_cost_usd"], predicted["total_cost_usd"])]
    out = []
    for name, m, p in rows:
        if m is None or p is None:
            out.append((name, m, p, "-"))
        elif name == "local share":
            out.append((name, m, p, f"{(p - m) * 100:+.1f} points"))
        else:
            out.append((name, m, p, f"{(p - m) / m:+.0%}" if m else "-"))
    return out


def main() -> int:
    os.environ.setdefault("HYBRIDGW_WORKERS", "1")  # one gateway process: per-core figures, as before --workers
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine-model", default="tiny-random")
    p.add_argument("--max-waiting", type=int, default=4, help="kv_fit spills when more than this wait")
    p.add_argument("--schedule", default="12:10,1:10", help="busy and quiet periods, RATE:SECONDS,...")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals")
    p.add_argument("--length-scale", type=float, default=0.05, help="the mixed preset's lengths × this")
    p.add_argument("--gpu-hour-usd", type=float, default=2.5)
    p.add_argument("--teams", nargs="+", default=["alpha", "beta"])
    p.add_argument("--keep", type=Path, help="keep the ledger, policy, model and bench results here")
    p.add_argument("--profile-requests", type=int, default=8, help="requests per single-request profile run")
    p.add_argument("--profile-long-isl", type=int, default=112,
                   help="the profile's long prompt in o200k tokens (~140 of the engine's: the workload's top)")
    p.add_argument("--profile-batch", type=int, default=32, help="the profile's large batch (near the busy period's)")
    p.add_argument("--bench-profile", action="store_true",
                   help="also replay with a model file from `hybridgw bench --profile` that the policy names")
    p.add_argument("--json", type=Path, help="also write the comparison here (figure -> measured, predicted)")
    p.add_argument("--seed", type=int, default=1, help="seed of the measured run's arrivals and lengths")
    p.add_argument("--spans", action="store_true", help="break the local TTFTs into phases from the engine's spans")
    a = p.parse_args()
    print(f"load average at start: {', '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    hosted_port, engine_port = procs.free_port(), procs.free_port()
    hosted, engine = f"http://127.0.0.1:{hosted_port}", f"http://127.0.0.1:{engine_port}"
    sim = procs.python_module("tests.fakes.hosted_sim", "--port", str(hosted_port), "--seed", str(a.seed))
    eng = procs.hybridgw("engine", "--model", a.engine_model, "--port", str(engine_port))
    eng_env = {"HYBRIDGW_TRACES": "console"} if a.spans else None
    with tempfile.TemporaryDirectory() as scratch:
        tmp = a.keep or Path(scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        with procs.running(sim, f"{hosted}/v1/models", name="hosted-sim", cwd=ROOT), \
                procs.running(eng, f"{engine}/health", env=eng_env, name="engine", timeout_s=300, cwd=ROOT) as eng_proc:
            policy = tmp / "policy.yaml"
            policy.write_text(POLICY.format(model=a.engine_model, engine=engine, hosted=hosted, hosted_model=HOSTED_MODEL,
                                            max_waiting=a.max_waiting, gpu_hour=a.gpu_hour_usd))
            data = tmp / "gateway"
            data.mkdir(exist_ok=True)
            keys = [run_cli(*procs.hybridgw("keys", "--data-dir", str(data), "--config", str(policy), "create", "--team", t)).strip()
                    for t in a.teams]
            measured, engine_model, t0, t1 = measure(a, policy, data, keys, engine)
        spans = engine_spans(eng_proc.output()) if a.spans else []  # once stopped: its exporter flushed
        if a.spans and a.keep:  # the spans' log, for bench/replay_intake.py
            (tmp / "engine.log").write_text(eng_proc.output())
        in_run = engine_model.pop("in_run")
        lags = engine_model.pop("state_latency_s")
        speed, host = engine_model.pop("engine_speed"), engine_model.pop("host")
        print("engine speed during the run:", json.dumps(speed), "host:", json.dumps(host), flush=True)
        print("performance model:", json.dumps(engine_model), flush=True)
        state_lag = {"p50": lags[len(lags) // 2], "p95": lags[int(0.95 * (len(lags) - 1))], "n": len(lags)} if lags else None
        print(f"GET /v1/engine/state during the run (s): {state_lag}", flush=True)
        (tmp / "window.json").write_text(json.dumps({"since": t0, "until": t1, "seed": a.seed, "schedule": a.schedule,
                                                     "load_average": os.getloadavg(), "state_latency_s": state_lag,
                                                     "engine_speed": speed, "host": host}))
        replays: dict[str, dict[str, Any]] = {}
        runs = [("perf.json", perf_model(engine_model), policy), ("perf-in-run.json", in_run and perf_model(in_run), policy)]
        if a.bench_profile:  # the same policy naming the profile's file for its engine (read at load)
            named = tmp / "policy-bench-profile.yaml"
            named.write_text(policy.read_text().replace("local: {kind: engine,", "local: {kind: engine, perf_model: bench-profile.yaml,"))
            print("bench --profile model:", (tmp / "bench-profile.yaml").read_text(), flush=True)
            runs.append(("perf-hosted.json", hosted_only(), named))
        # `replay --calibrate`: the engine's step times and the hosted API's TTFT and speed as the run's own
        # ledger shows them (policies/replay/recording_fit.py) — fitted to the window it then predicts.
        runs.append(("perf-calibrated.json", perf_model(engine_model), policy))
        for name, model_file, replayed in runs:
            if model_file is None:
                continue
            (tmp / name).write_text(json.dumps(model_file, indent=2))
            replays[name] = json.loads(run_cli(*procs.hybridgw(
                "replay", str(replayed), "--ledger", str(data / "usage.sqlite3"), "--since", f"{t0:.3f}", "--until",
                f"{t1:.3f}", "--perf-model", str(tmp / name), "--json", "-",
                *(["--calibrate", "--calibrate-out", str(tmp / "calibrated-model.json")] if name == "perf-calibrated.json"
                  else [])), env={"OPENAI_API_KEY": "x"}))
            (tmp / name.replace("perf", "replay")).write_text(json.dumps(replays[name], indent=2))
        print("calibrated engine:", replays["perf-calibrated.json"]["meta"].get("models"), flush=True)
        phases = breakdown(read_ledger_rows(data / "usage.sqlite3", t0, t1), spans) if spans else []
    s = measured["summary"]
    print(f"\n{s['requests']} requests ({s['ok']} ok), mixed × {a.length_scale}, Poisson {a.schedule} for "
          f"{a.duration:g} s; local = {a.engine_model} on this CPU; hosted = hosted_sim {HOSTED_MODEL} (simulated)\n")
    rows = compare(measured, replays["perf.json"])
    diag = {n: p for n, _, p, _ in compare(measured, replays["perf-in-run.json"])} if "perf-in-run.json" in replays else {}
    named = {n: (p, off) for n, _, p, off in compare(measured, replays["perf-hosted.json"])} \
        if "perf-hosted.json" in replays else {}
    fitted = {n: (p, off) for n, _, p, off in compare(measured, replays["perf-calibrated.json"])}
    if a.json:
        a.json.write_text(json.dumps({"requests": s["requests"], "ok": s["ok"],
                                      "figures": {n: {"measured": m, "predicted": pr, "with_in_run_steps": diag.get(n),
                                                      "with_bench_profile_file": named.get(n, (None,))[0],
                                                      "calibrated": fitted[n][0]}
                                                  for n, m, pr, _ in rows}}))
    print("| figure | measured | predicted (profiled model) | off by | replay with in-run step times"
          + (" | `bench --profile` file | off by |" if named else " |") + " `replay --calibrate` | off by |")
    print("|---|---:|---:|---:|---:|" + ("---:|---:|" if named else "") + "---:|---:|")
    for name, m, pr, off in rows:
        fmt = "{:.1%}" if name == "local share" else "{:.5f}" if "$" in name else "{:.3f}"

        def show(v: float | None, fmt: str = fmt) -> str:
            return "-" if v is None else fmt.format(v)

        extra = f" {show(named[name][0])} | {named[name][1]} |" if named else ""
        print(f"| {name} | {show(m)} | {show(pr)} | {off} | {show(diag.get(name))} |{extra}"
              f" {show(fitted[name][0])} | {fitted[name][1]} |")
    if a.spans:
        busy = float(a.schedule.split(",")[0].split(":")[1])
        print(f"\nlocal TTFT by phase ({len(phases)} of {len(spans)} engine spans matched), seconds:\n"
              + breakdown_table(phases, busy))
    print(f"\nload average at end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
