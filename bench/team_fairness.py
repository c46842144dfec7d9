"""Team fairness under a flood: the quiet team's TTFT with fairness on vs off, side by side in one run.

One `hybridgw engine --model tiny-random` (4 running slots, on this machine's CPU) behind one
`hybridgw serve` whose policy file is rewritten between phases (the gateway reloads it) to turn
`fairness: {enabled: …}` on and off; phases alternate on / off / on / off. In each, team `red`
floods (closed loop, `--flooders` streams at once) while team `blue` sends one short stream every
`--every-s`. The rule is kv_fit with the engine's queue limit at 0: local-only by default (a refused
request waits its Retry-After and tries again, as the openai SDK does; TTFT counts from the first
try), or with `--spill` to a simulated hosted API (the fake upstream, `--hosted-ttft-ms`).
Reported per mode: blue's TTFT p50/p95, its share served locally, red's share local.

    .venv/bin/python bench/team_fairness.py [--spill] [--phase-s 4] [--phases 4] [--flooders 8]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policies.reload import policy_version
from tests.support import procs

POLICY = """version: 1
backends:
  local: {{kind: engine, base_url: "{engine}/v1", max_waiting: 0}}
  hosted: {{kind: openai, base_url: "{hosted}/v1", api_key: simulated}}
models:
  chat:
    deployments:
      - {{backend: local, model: tiny-random}}
      - {{backend: hosted, model: "m;ttft_ms={ttft_ms};chunks=8;delay_ms=10"}}
teams: {{red: {{}}, blue: {{}}}}
fairness: {{enabled: {enabled}}}
rules:
  - {{name: local-first, strategy: kv_fit, local: [local], spill: [{spill}]}}
"""


def write_policy(config: Path, enabled: bool, a: argparse.Namespace, engine: str, hosted: str) -> str:
    """Write the policy with fairness on or off; its version (what /readyz shows once it is in force)."""
    text = POLICY.format(engine=engine, hosted=hosted, ttft_ms=a.hosted_ttft_ms, enabled=str(enabled).lower(),
                         spill="hosted" if a.spill else "")
    config.write_text(text)
    return policy_version(text)


def in_force(url: str, version: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).json().get("policy", {}).get("version") == version
    except (httpx.HTTPError, ValueError):
        return False


async def one(client: httpx.AsyncClient, url: str, key: str, max_tokens: int, i: int,
              deadline: float) -> tuple[float | None, str]:
    """One streamed chat request, tried again after each 503's Retry-After until `deadline`:
    (TTFT from the first try to the first content chunk, or None when it never got one; backend)."""
    body = {"model": "chat", "messages": [{"role": "user", "content": f"tell me something {i}"}],
            "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    sent = time.perf_counter()
    while True:
        ttft, backend, retry_s = await _try(client, url, key, body, sent)
        if retry_s is None or time.perf_counter() + retry_s > deadline:
            return ttft, backend
        await asyncio.sleep(retry_s)


async def _try(client: httpx.AsyncClient, url: str, key: str, body: dict, sent: float
               ) -> tuple[float | None, str, float | None]:
    ttft = None
    try:
        async with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                                 headers={"authorization": f"Bearer {key}"}) as resp:
            backend = resp.headers.get("x-hybridgw-backend", "?")
            if resp.status_code != 200:
                await resp.aread()
                retry = resp.headers.get("retry-after")
                return None, backend, float(retry) if resp.status_code == 503 and retry else None
            async for line in resp.aiter_lines():
                if ttft is None and line.startswith("data: {") and '"content":"' in line.replace(" ", "") \
                        and '"content":""' not in line.replace(" ", ""):
                    ttft = time.perf_counter() - sent
    except httpx.HTTPError:
        return None, "error", None
    return ttft, backend, None


async def phase(url: str, keys: dict, a: argparse.Namespace) -> dict[str, list]:
    """Red floods with `flooders` closed loops; blue sends one short stream every `every_s`."""
    stop = time.perf_counter() + a.phase_s
    seen: dict[str, list] = {"blue": [], "red": []}
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        async def flood(w: int) -> None:
            i = 0
            while time.perf_counter() < stop:
                seen["red"].append(await one(client, url, keys["red"], a.flood_tokens, w * 10_000 + i, stop))
                i += 1

        async def quiet() -> None:
            tasks, i = [], 0
            await asyncio.sleep(a.every_s)  # the flood first
            while time.perf_counter() < stop:
                tasks.append(asyncio.create_task(one(client, url, keys["blue"], a.quiet_tokens, i, stop + 30)))
                i += 1
                await asyncio.sleep(a.every_s)
            seen["blue"] += await asyncio.gather(*tasks)

        await asyncio.gather(quiet(), *(flood(w) for w in range(a.flooders)))
    return seen


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[-1] if len(values) > 1 else values[0]


def summary(seen: dict[str, list]) -> dict[str, Any]:
    blue_ttft = [t for t, _ in seen["blue"] if t is not None]
    return {"blue_requests": len(seen["blue"]), "blue_failed": sum(t is None for t, _ in seen["blue"]),
            "blue_ttft_p50_ms": round(statistics.median(blue_ttft) * 1000, 1) if blue_ttft else None,
            "blue_ttft_p95_ms": round(p95(blue_ttft) * 1000, 1) if blue_ttft else None,
            "blue_local": round(sum(b == "local" for _, b in seen["blue"]) / max(1, len(seen["blue"])), 3),
            "red_requests": len(seen["red"]),
            "red_local": round(sum(b == "local" for _, b in seen["red"]) / max(1, len(seen["red"])), 3)}


def main() -> int:
    os.environ.setdefault("HYBRIDGW_WORKERS", "1")  # one gateway process: per-core figures, as before --workers
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spill", action="store_true", help="spill to a simulated hosted API instead of waiting")
    p.add_argument("--phase-s", type=float, default=4.0)
    p.add_argument("--phases", type=int, default=4, help="alternating on / off, this many in all")
    p.add_argument("--flooders", type=int, default=8)
    p.add_argument("--flood-tokens", type=int, default=8)
    p.add_argument("--quiet-tokens", type=int, default=2)
    p.add_argument("--every-s", type=float, default=0.4)
    p.add_argument("--hosted-ttft-ms", type=int, default=400)
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="hybridgw-fairness-"))
    hosted_port, engine_port, port = procs.free_port(), procs.free_port(), procs.free_port()
    hosted, engine, url = (f"http://127.0.0.1:{p}" for p in (hosted_port, engine_port, port))
    config = tmp / "policy.yaml"
    write_policy(config, True, a, engine, hosted)
    keys = {team: subprocess.run(procs.hybridgw("keys", "--data-dir", str(tmp), "--config", str(config), "create",
                                                "--team", team), capture_output=True, text=True, check=True,
                                 cwd=ROOT).stdout.strip() for team in ("red", "blue")}
    engine_cmd = procs.hybridgw("engine", "--model", "tiny-random", "--device", "cpu", "--port", str(engine_port),
                                "--max-num-seqs", "4", "--threads", "1")
    serve = procs.hybridgw("serve", "--config", str(config), "--port", str(port), "--data-dir", str(tmp))
    merged: dict[str, dict[str, list]] = {"on": {"blue": [], "red": []}, "off": {"blue": [], "red": []}}
    with procs.running(procs.python_module("tests.fakes.openai_upstream", "--port", str(hosted_port)),
                       f"{hosted}/health", name="hosted-sim"), \
            procs.running(engine_cmd, f"{engine}/health", name="engine", timeout_s=300), \
            procs.running(serve, f"{url}/healthz", name="serve", timeout_s=300):
        for k in range(a.phases):
            mode = "on" if k % 2 == 0 else "off"
            version = write_policy(config, mode == "on", a, engine, hosted)
            procs.wait_until(lambda v=version: in_force(url, v), f"policy {mode} in force", 60, 0.2)
            asyncio.run(one_warm(url, keys))
            seen = asyncio.run(phase(url, keys, a))
            for team in seen:
                merged[mode][team] += seen[team]
            print(f"phase {k + 1}/{a.phases} fairness {mode}: {json.dumps(summary(seen))}", flush=True)
    rows = {mode: summary(merged[mode]) for mode in merged}
    print(json.dumps(rows, indent=2))
    on, off = rows["on"]["blue_ttft_p95_ms"], rows["off"]["blue_ttft_p95_ms"]
    if on and off:
        print(f"blue TTFT p95: fairness on {on} ms, off {off} ms (off/on {off / on:.2f}×); "
              f"p50 on {rows['on']['blue_ttft_p50_ms']} ms, off {rows['off']['blue_ttft_p50_ms']} ms")
    return 0


async def one_warm(url: str, keys: dict) -> None:
    """Both teams once, so the gateway has polled the engine before the phase starts."""
    async with httpx.AsyncClient(timeout=60) as client:
        for team in ("red", "blue"):
            await one(client, url, keys[team], 4, 0, time.perf_counter() + 30)


if __name__ == "__main__":
    raise SystemExit(main())
