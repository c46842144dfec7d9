"""Prefix affinity over a pool of two local engines: one shared-prefix multi-tenant workload (`hybridgw
bench --tenants`) sent at once through one `hybridgw serve` under each pool order — prefix affinity,
round-robin, least-loaded — each order with its own two fresh `hybridgw engine` processes (tiny-random,
caches start empty) and its own alias (`pool-<order>`). The three run side by side, at the same time,
with the same requests (same seed): a machine shared with others then slows all three alike (one torch
thread per engine, so that six engines do not oversubscribe the cores even more). Each engine's KV pool
holds about half the tenants' prompts: an engine that sees every tenant thrashes its prefix cache; one
that sees half of them keeps it.

A warm-up (two requests per tenant, not measured) fills the caches first. TTFT p50/p90 of the measured
requests; prefix-cache hit rate = their cached prompt tokens / their prompt tokens, both as the engines
report them (usage.prompt_tokens_details.cached_tokens).

    .venv/bin/python bench/prefix_affinity.py [--tenants 4] [--prefix-tokens 2500] [--duration 30]
        [--concurrency 4] [--pool-tokens 8000] [--load-tokens 256] [--balances prefix round_robin least_loaded]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.hybrid_economics import is_ready, run_cli
from tests.support import procs

ENGINES = ("e1", "e2")
KV_BYTES_PER_TOKEN = 512  # tiny-random (float32 KV)


def policy_yaml(urls: dict[str, str], balances: list[str], load_tokens: float) -> str:
    """Per order an alias `pool-<order>` over its own engines `<order>-e1`, `<order>-e2`, and its rule."""
    backends = "".join(f"  {n}: {{kind: engine, model: tiny-random, base_url: '{u}/v1'}}\n" for n, u in urls.items())
    models, rules = "", ""
    for b in balances:
        pool = [f"{b}-{e}" for e in ENGINES]
        models += f"  pool-{b}:\n    deployments:\n" + "".join(
            f"      - {{backend: {n}, model: tiny-random}}\n" for n in pool)
        rules += (f"  - {{name: {b}, when: {{model: pool-{b}}}, strategy: prefix_affinity, local: [{', '.join(pool)}],"
                  f" balance: {b}, load_tokens: {load_tokens}}}\n")
    return f"version: 1\nbackends:\n{backends}models:\n{models}teams: {{default: {{}}}}\nrules:\n{rules}"


def start_engines(names: list[str], a: argparse.Namespace, stack: ExitStack) -> dict[str, str]:
    """All engines started at once, then waited for (a start takes seconds on a busy machine)."""
    urls, started = {}, []
    for name in names:
        port = procs.free_port()
        urls[name] = f"http://127.0.0.1:{port}"
        args = procs.hybridgw("engine", "--model", "tiny-random", "--port", str(port),
                              "--kv-cache-bytes", str(a.pool_tokens * KV_BYTES_PER_TOKEN), "--threads", "1")
        proc = procs.start(args, name=name, cwd=ROOT)
        stack.callback(procs.stop, proc)
        started.append((name, proc))
    for name, proc in started:
        procs.wait_http(f"{urls[name]}/health", proc, timeout_s=300)
    return urls


def bench_command(url: str, key: str, balance: str, a: argparse.Namespace, out: Path) -> list[str]:
    return procs.hybridgw(
        "bench", url, "--model", f"pool-{balance}", f"--api-key={key}", "--tenants", str(a.tenants),
        "--prefix-tokens", str(a.prefix_tokens), "--isl", f"fixed:{a.prefix_tokens + a.tail_tokens}",
        "--osl", f"fixed:{a.osl}", "--ignore-eos", "--concurrency", str(a.concurrency), "--timeout", "60",
        "--seed", "1", "--warmup", str(2 * a.tenants), "--requests", "100000", "--duration", str(a.duration),
        "--no-progress", "--out", str(out))


def run(a: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    with ExitStack() as stack:
        engines = start_engines([f"{b}-{e}" for b in a.balances for e in ENGINES], a, stack)
        data = tmp / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = data / "policy.yaml"
        config.write_text(policy_yaml(engines, a.balances, a.load_tokens))
        key = run_cli(*procs.hybridgw("keys", "--data-dir", str(data), "create", "--team", "default")).strip()
        port = procs.free_port()
        url = f"http://127.0.0.1:{port}"
        serve = procs.hybridgw("serve", "--config", str(config), "--port", str(port), "--data-dir", str(data))
        stack.enter_context(procs.running(serve, f"{url}/healthz", env={"HYBRIDGW_DATA_DIR": str(data)},
                                          name="serve", timeout_s=300, cwd=ROOT))
        procs.wait_until(lambda: is_ready(url), "gateway ready", wait_s=300, every_s=0.5)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        benches = [subprocess.Popen(bench_command(url, key, b, a, tmp / b), cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for b in a.balances]
        for b, p in zip(a.balances, benches, strict=True):
            _, err = p.communicate()
            if p.returncode not in (0, 1):  # 1: some requests failed; still measured
                raise SystemExit(f"hybridgw bench for {b} failed ({p.returncode}): {err.decode()[-3000:]}")
    return [row(b, json.loads((tmp / b / "results.json").read_text())) for b in a.balances]


def row(balance: str, body: dict[str, Any]) -> dict[str, Any]:
    s = body["summary"]
    ttft = s["ttft"] or {}
    measured = [r for r in body["requests"] if not r["warmup"] and r["error"] is None]
    prompt = sum(r["prompt_tokens"] or 0 for r in measured)
    cached = sum(r["cached_tokens"] or 0 for r in measured)
    return {
        "balance": balance, "requests": s["requests"], "ok": s["ok"],
        "backends": {k.removeprefix(f"{balance}-"): v for k, v in s["backends"].items()},
        "ttft_p50": ttft.get("p50"), "ttft_p90": ttft.get("p90"), "throughput_rps": s.get("request_throughput"),
        "prefix_hit_rate": cached / prompt if prompt else None, "errors": s["errors"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.0f}"

    rr = next((r for r in rows if r["balance"] == "round_robin"), None)
    out = ["| pool order | requests (ok) | split e1/e2 | TTFT p50 ms | TTFT p90 ms | p90 vs round-robin "
           "| prefix-cache hit rate |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        split = "/".join(f"{r['backends'].get(n, 0.0):.0%}" for n in ENGINES)
        ratio = f"{r['ttft_p90'] / rr['ttft_p90']:.2f}×" if rr and r["ttft_p90"] and rr["ttft_p90"] else "-"
        hit = "-" if r["prefix_hit_rate"] is None else f"{r['prefix_hit_rate']:.0%}"
        out.append(f"| {r['balance']} | {r['requests']} ({r['ok']}) | {split} | {ms(r['ttft_p50'])} "
                   f"| {ms(r['ttft_p90'])} | {ratio} | {hit} |")
    return "\n".join(out)


def main() -> int:
    os.environ.setdefault("HYBRIDGW_WORKERS", "1")  # one gateway process: per-core figures, as before --workers
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tenants", type=int, default=4, help="shared system prompts")
    p.add_argument("--prefix-tokens", type=int, default=2500, help="tokens in each tenant's system prompt")
    p.add_argument("--tail-tokens", type=int, default=32, help="each request's own tokens after it")
    p.add_argument("--osl", type=int, default=8, help="output tokens per request")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight per order")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of measured requests")
    p.add_argument("--pool-tokens", type=int, default=8000, help="each engine's KV pool, in tokens")
    p.add_argument("--load-tokens", type=float, default=256, help="prefix order: cost of a request on an engine")
    p.add_argument("--balances", nargs="+", default=["prefix", "round_robin", "least_loaded"],
                   choices=["prefix", "round_robin", "least_loaded"])
    p.add_argument("--out", default="", help="keep each order's bench results here (default: a temp folder)")
    a = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(a, Path(a.out) if a.out else Path(tmp))
    for r in rows:
        print(json.dumps(r))
    print(f"\nworkload: {a.tenants} tenants × {a.prefix_tokens}-token system prompt + {a.tail_tokens} own tokens, "
          f"{a.osl} output tokens, closed loop at concurrency {a.concurrency} per order for {a.duration:g} s after "
          f"a warm-up; per order 2 × tiny-random engines on this CPU, {a.pool_tokens}-token KV pool each; "
          f"prefix load_tokens {a.load_tokens:g}\n")
    print(table(rows))
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
