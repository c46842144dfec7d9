"""Prefix affinity over a pool of two local engines: one shared-prefix multi-tenant workload (`hybridgw
bench --tenants`) through one `hybridgw serve` under each pool order in turn — prefix affinity,
round-robin, least-loaded (one model alias per order, same two `hybridgw engine` processes) — side by
side in one run. Each engine's KV pool holds about half the tenants' prompts: an engine that sees
every tenant thrashes its prefix cache; one that sees half of them keeps it.

Each order gets its own tenants (its own --seed) and a warm-up first (two requests per tenant, not
measured): it fills the caches with its tenants and evicts the previous order's. TTFT p50/p90 of the
measured requests; prefix-cache hit rate = their cached prompt tokens / their prompt tokens, both as
the engines report them (usage.prompt_tokens_details.cached_tokens).

    .venv/bin/python bench/prefix_affinity.py [--tenants 8] [--prefix-tokens 512] [--duration 15]
        [--concurrency 4] [--pool-tokens 3200] [--balances prefix round_robin least_loaded]
"""

from __future__ import annotations

import argparse
import json
import os
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


def policy_yaml(urls: dict[str, str], balances: list[str]) -> str:
    """One alias per pool order (`pool-<balance>`), each with its rule over the same engines."""
    backends = "".join(f"  {n}: {{kind: engine, model: tiny-random, base_url: '{u}/v1'}}\n" for n, u in urls.items())
    deployments = "".join(f"      - {{backend: {n}, model: tiny-random}}\n" for n in urls)
    models = "".join(f"  pool-{b}:\n    deployments:\n{deployments}" for b in balances)
    rules = "".join(f"  - {{name: {b}, when: {{model: pool-{b}}}, strategy: prefix_affinity, "
                    f"local: [{', '.join(urls)}], balance: {b}}}\n" for b in balances)
    return f"version: 1\nbackends:\n{backends}models:\n{models}teams: {{default: {{}}}}\nrules:\n{rules}"


def bench(url: str, key: str, balance: str, seed: int, a: argparse.Namespace, out: Path, *load: str) -> None:
    run_cli(*procs.hybridgw(
        "bench", url, "--model", f"pool-{balance}", f"--api-key={key}", "--tenants", str(a.tenants),
        "--prefix-tokens", str(a.prefix_tokens), "--isl", f"fixed:{a.prefix_tokens + a.tail_tokens}",
        "--osl", f"fixed:{a.osl}", "--ignore-eos", "--concurrency", str(a.concurrency), "--timeout", "60",
        "--seed", str(seed), "--no-progress", "--out", str(out), *load))


def one_order(balance: str, seed: int, url: str, key: str, a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    bench(url, key, balance, seed, a, tmp / balance, "--warmup", str(2 * a.tenants), "--requests", "100000",
          "--duration", str(a.duration))
    body = json.loads((tmp / balance / "results.json").read_text())
    measured = [r for r in body["requests"] if not r["warmup"] and r["error"] is None]
    prompt = sum(r["prompt_tokens"] or 0 for r in measured)
    cached = sum(r["cached_tokens"] or 0 for r in measured)
    return row(balance, body, cached / prompt if prompt else None)


def run(a: argparse.Namespace, tmp: Path) -> list[dict[str, Any]]:
    with ExitStack() as stack:
        engines = {}
        for name in ENGINES:
            port = procs.free_port()
            engines[name] = f"http://127.0.0.1:{port}"
            args = procs.hybridgw("engine", "--model", "tiny-random", "--port", str(port),
                                  "--kv-cache-bytes", str(a.pool_tokens * KV_BYTES_PER_TOKEN))
            stack.enter_context(procs.running(args, f"{engines[name]}/health", name=name, timeout_s=300, cwd=ROOT))
        data = tmp / "data"
        data.mkdir()
        config = data / "policy.yaml"
        config.write_text(policy_yaml(engines, a.balances))
        key = run_cli(*procs.hybridgw("keys", "--data-dir", str(data), "create", "--team", "default")).strip()
        port = procs.free_port()
        url = f"http://127.0.0.1:{port}"
        serve = procs.hybridgw("serve", "--config", str(config), "--port", str(port), "--data-dir", str(data))
        stack.enter_context(procs.running(serve, f"{url}/healthz", env={"HYBRIDGW_DATA_DIR": str(data)},
                                          name="serve", timeout_s=300, cwd=ROOT))
        procs.wait_until(lambda: is_ready(url), "gateway ready", wait_s=300, every_s=0.5)
        rows = []
        for seed, balance in enumerate(a.balances, start=1):
            rows.append(one_order(balance, seed, url, key, a, tmp))
            print(json.dumps(rows[-1]), flush=True)
        return rows


def row(balance: str, body: dict[str, Any], hit_rate: float | None) -> dict[str, Any]:
    s = body["summary"]
    ttft = s["ttft"] or {}
    return {
        "balance": balance, "requests": s["requests"], "ok": s["ok"], "backends": s["backends"],
        "ttft_p50": ttft.get("p50"), "ttft_p90": ttft.get("p90"), "throughput_rps": s.get("request_throughput"),
        "prefix_hit_rate": hit_rate, "errors": s["errors"],
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tenants", type=int, default=8, help="shared system prompts")
    p.add_argument("--prefix-tokens", type=int, default=512, help="tokens in each tenant's system prompt")
    p.add_argument("--tail-tokens", type=int, default=32, help="each request's own tokens after it")
    p.add_argument("--osl", type=int, default=8, help="output tokens per request")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--duration", type=float, default=15.0, help="seconds of requests per pool order")
    p.add_argument("--pool-tokens", type=int, default=3200, help="each engine's KV pool, in tokens")
    p.add_argument("--balances", nargs="+", default=["prefix", "round_robin", "least_loaded"],
                   choices=["prefix", "round_robin", "least_loaded"])
    a = p.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f} (the machine is shared)", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(a, Path(tmp))
    print(f"\nworkload: {a.tenants} tenants × {a.prefix_tokens}-token system prompt + {a.tail_tokens} own tokens, "
          f"{a.osl} output tokens, closed loop at concurrency {a.concurrency} for {a.duration:g} s per order after a warm-up; "
          f"2 × tiny-random engines on this CPU, {a.pool_tokens}-token KV pool each\n")
    print(table(rows))
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
