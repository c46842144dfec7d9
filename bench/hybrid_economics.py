"""The hybrid economics benchmark: the same `mixed` workload (several teams, Poisson arrivals with
a busy and a quiet period) through `hybridgw serve` once per setup in one run — `kv_fit` (local while
the KV fits and the queue is short, else hosted), `slo_cost` (cheapest predicted to meet the TTFT SLO;
its engine model measured first by `hybridgw bench --profile`), all-hosted, all-local — with the local
engine on this machine's CPU and the hosted side SIMULATED (tests/fakes/hosted_sim.py, gpt-4o-mini).

Cost: hosted $ = the hosted requests' tokens at litellm's bundled gpt-4o-mini price; local $ = a
stated GPU-hour price × the run's length (an engine costs while it is up, busy or not).

    .venv/bin/python bench/hybrid_economics.py [--engine-model tiny-random] [--schedule 3:10,0.5:10]
        [--duration 20] [--slo-ttft-ms 2000] [--gpu-hour-usd 2.5] [--setups ...] [--perf-model FILE]
        [--keep-logs DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies.estimator import hosted_price, litellm_price_table
from tests.support import procs

HOSTED_MODEL = "gpt-4o-mini"
LOCAL = "  local: {{kind: engine, model: {model}, max_waiting: {max_waiting}{extra}}}\n"
HOSTED = "  openai: {{kind: openai, base_url: '{url}/v1', api_key_env: OPENAI_API_KEY}}\n"
RULES = {
    "kv_fit": "  - {name: local-then-spill, strategy: kv_fit, local: [local], spill: [openai]}\n",
    "slo_cost": "  - {name: slo-cost, strategy: slo_cost, candidates: [local, openai], slo: bench}\n",
    "all-hosted": "  - {name: hosted, route: [openai]}\n",
    "all-local": "  - {name: local-only, strategy: kv_fit, local: [local]}\n",
}


def policy_yaml(setup: str, a: argparse.Namespace, hosted_url: str) -> str:
    uses_local, uses_hosted = setup != "all-hosted", setup != "all-local"
    extra = f", perf_model: '{Path(a.perf_model).resolve()}'" if setup == "slo_cost" and a.perf_model else ""
    local = LOCAL.format(model=a.engine_model, max_waiting=a.max_waiting, extra=extra)
    backends = (local if uses_local else "") + (
        HOSTED.format(url=hosted_url) if uses_hosted else ""
    )
    deployments = (f"      - {{backend: local, model: {a.engine_model}}}\n" if uses_local else "") + (
        f"      - {{backend: openai, model: {HOSTED_MODEL}}}\n" if uses_hosted else ""
    )
    models = f"models:\n  chat:\n    deployments:\n{deployments}"
    slos = f"slos:\n  bench: {{ttft_p95_s: {a.slo_ttft_ms / 1000:g}}}\n"
    teams = "teams:\n" + "".join(f"  {t}: {{}}\n" for t in a.teams)
    return f"version: 1\nbackends:\n{backends}{models}{slos}{teams}rules:\n{RULES[setup]}"


def profile_engine(a: argparse.Namespace, tmp: Path) -> Path:
    """`hybridgw bench --profile` against the engine alone (a short schedule): slo_cost's prior."""
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    path = tmp / "perf_model.yaml"
    engine = procs.hybridgw("engine", "--model", a.engine_model, "--port", str(port))
    with procs.running(engine, f"{url}/health", name="engine-profile", timeout_s=300, cwd=ROOT):
        print(run_cli(*procs.hybridgw("bench", url, "--profile", "--profile-out", str(path), "--no-progress",
                                      "--profile-lengths", "16,128,512", "--profile-batches", "1,8",
                                      "--profile-contexts", "32,256", "--profile-decode-tokens", "16")), flush=True)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    if done.returncode not in (0, 1):  # 1: the bench ran but some requests failed; still measured
        raise SystemExit(f"{' '.join(args[:4])} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout


def is_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def one_setup(setup: str, a: argparse.Namespace, hosted_url: str, tmp: Path) -> dict[str, Any]:
    data = tmp / setup
    data.mkdir()
    config = data / "policy.yaml"
    config.write_text(policy_yaml(setup, a, hosted_url))
    keys = [
        run_cli(*procs.hybridgw("keys", "--data-dir", str(data), "--config", str(config), "create", "--team", t)).strip()
        for t in a.teams
    ]
    port = procs.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"OPENAI_API_KEY": "simulated", "HYBRIDGW_DATA_DIR": str(data)}
    if a.keep_logs:  # each request's route reason (the predictions) and TTFT, as spans on the log
        env["HYBRIDGW_TRACES"] = "console"
    serve = procs.hybridgw("serve", "--config", str(config), "--port", str(port), "--data-dir", str(data))
    with procs.running(serve, f"{url}/healthz", env=env, name=f"serve-{setup}", timeout_s=300, cwd=ROOT) as proc:
        procs.wait_until(lambda: is_ready(url), f"{setup}: gateway ready", wait_s=300, every_s=0.5)
        run_cli(
            *procs.hybridgw(
                "bench",
                url,
                "--model",
                "chat",
                *(f"--api-key={t}={k}" for t, k in zip(a.teams, keys)),
                "--preset",
                "mixed",
                "--length-scale",
                str(a.length_scale),
                "--rate-schedule",
                a.schedule,
                "--requests",
                "100000",
                "--duration",
                str(a.duration),
                "--timeout",
                "60",
                "--slo",
                f"ttft:{a.slo_ttft_ms}",
                "--seed",
                "1",
                "--no-progress",
                "--out",
                str(data / "bench"),
            )
        )
    if a.keep_logs:
        a.keep_logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(proc.log_path, a.keep_logs / f"{setup}.log")
        shutil.copy(data / "bench" / "results.json", a.keep_logs / f"{setup}.json")
    return row(setup, json.loads((data / "bench" / "results.json").read_text()), a)


def row(setup: str, body: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    s = body["summary"]
    price = hosted_price(HOSTED_MODEL, {}, litellm_price_table())
    assert price is not None, "litellm's bundled price table has no gpt-4o-mini"
    hosted = [
        r for r in body["requests"] if not r["warmup"] and r["backend"] == "openai" and r["error"] is None
    ]
    hosted_usd = sum(price.cost(r["prompt_tokens"] or 0, r["completion_tokens"] or 0) for r in hosted)
    local_usd = a.gpu_hour_usd * s["duration_s"] / 3600 if setup != "all-hosted" else 0.0
    ttft = s["ttft"] or {}
    slo_s = a.slo_ttft_ms / 1000
    measured = [r for r in body["requests"] if not r["warmup"]]

    def met(backend: str) -> float | None:
        """SLO attainment of the requests one backend served (where the misses come from)."""
        served = [r for r in measured if r["backend"] == backend]
        return sum(1 for r in served if r["ttft_s"] is not None and r["ttft_s"] <= slo_s) / len(served) if served else None

    return {
        "setup": setup,
        "requests": s["requests"],
        "ok": s["ok"],
        "local_share": s["backends"].get("local", 0.0),
        "hosted_usd": hosted_usd,
        "local_usd": local_usd,
        "total_usd": hosted_usd + local_usd,
        "ttft_p50": ttft.get("p50"),
        "ttft_p95": ttft.get("p95"),
        "ttft_p99": ttft.get("p99"),
        "slo_attainment": s["slo_attainment"],
        "slo_local": met("local"),
        "slo_hosted": met("openai"),
        "goodput": s["goodput"],
        "errors": s["errors"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f}"

    head = (
        "| setup | requests (ok) | served locally | hosted $ | local $ | total $ | TTFT p50/p95/p99 ms "
        "| SLO attainment (local / hosted) | goodput req/s | errors |"
    )
    out = [head, "|---|---|---|---|---|---|---|---|---|---|"]

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    for r in rows:
        out.append(
            f"| {r['setup']} | {r['requests']} ({r['ok']}) | {r['local_share']:.0%} | {r['hosted_usd']:.5f} "
            f"| {r['local_usd']:.5f} | {r['total_usd']:.5f} | {ms(r['ttft_p50'])} / {ms(r['ttft_p95'])} / "
            f"{ms(r['ttft_p99'])} | {r['slo_attainment'] or 0:.1%} ({pct(r['slo_local'])} / {pct(r['slo_hosted'])}) "
            f"| {r['goodput'] or 0:.2f} "
            f"| {r['errors'] or '-'} |"
        )
    return "\n".join(out)


def main() -> int:
    os.environ.setdefault("HYBRIDGW_WORKERS", "1")  # one gateway process: per-core figures, as before --workers
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine-model", default="tiny-random")
    p.add_argument("--max-waiting", type=int, default=4, help="the local backend's queue bound (kv_fit)")
    p.add_argument("--schedule", default="3:10,0.5:10", help="busy and quiet periods, RATE:SECONDS,...")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of arrivals per setup")
    p.add_argument("--length-scale", type=float, default=0.02, help="the mixed preset's lengths × this")
    p.add_argument("--slo-ttft-ms", type=float, default=2000.0)
    p.add_argument("--gpu-hour-usd", type=float, default=2.5, help="stated price of the local engine's GPU")
    p.add_argument("--teams", nargs="+", default=["alpha", "beta"])
    p.add_argument("--setups", nargs="+", default=list(RULES), choices=list(RULES))
    p.add_argument("--keep-logs", type=Path, help="keep each gateway's log (with its spans) and results here")
    p.add_argument("--perf-model", type=Path, help="slo_cost's engine model file (default: profile the engine first)")
    a = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared)", flush=True)
    port = procs.free_port()
    hosted_url = f"http://127.0.0.1:{port}"
    sim = procs.python_module("tests.fakes.hosted_sim", "--port", str(port), "--seed", "1")
    rows = []
    with (
        procs.running(sim, f"{hosted_url}/v1/models", name="hosted-sim", cwd=ROOT),
        tempfile.TemporaryDirectory() as tmp,
    ):
        if "slo_cost" in a.setups and a.perf_model is None:
            a.perf_model = profile_engine(a, Path(tmp))
            if a.keep_logs:
                a.keep_logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(a.perf_model, a.keep_logs / "perf_model.yaml")
        for setup in a.setups:
            rows.append(one_setup(setup, a, hosted_url, Path(tmp)))
            print(json.dumps(rows[-1]), flush=True)
    print(
        f"\nworkload: mixed × {a.length_scale}, teams {', '.join(a.teams)}, Poisson arrivals by period "
        f"{a.schedule} (req/s:seconds) for {a.duration:g} s; TTFT SLO {a.slo_ttft_ms:g} ms; "
        f"hosted = simulated {HOSTED_MODEL} at litellm's price; local = {a.engine_model} on this CPU "
        f"priced at "
        f"${a.gpu_hour_usd}/GPU-hour\n"
    )
    print(table(rows))
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
