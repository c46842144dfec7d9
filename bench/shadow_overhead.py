"""What shadow traffic costs the gateway: CPU per request with it off (no `shadow:`; `share: 0`) and on
at `share: 1.0` (every request also answered by a second backend, recorded and its pair stored), beside
a tree without the feature, interleaved round by round (bench/hot_path.py's measurement: /proc CPU of
the gateway process, full path on, the fake upstream answering at once).

Run: .venv/bin/python -m bench.shadow_overhead [--base PATH] [--requests 400] [--rounds 3]
     .venv/bin/python -m bench.shadow_overhead --micro   # the request path's added call alone, in-process
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from collections import Counter
from pathlib import Path

from bench.gateway_overhead import Server
from bench.hot_path import CHUNKS, Gateway, key_of, measure, report, start_gateway
from bench.otlp_discard import start_discard
from bench.run_report import finish
from bench.stack import start_fake
from bench.workers_throughput import POLICY
from tests.support import procs

ROOT = Path(__file__).resolve().parents[1]
# Both deployments everywhere, so routing is the same; only `shadow:` differs.
BOTH = POLICY.replace("  m: {{deployments: [{{backend: up, model: m}}]}}",
                      "  m: {{deployments: [{{backend: up, model: m}}, {{backend: up2, model: m2}}]}}").replace(
    "backends:\n", "backends:\n  up2: {{kind: openai, base_url: 'http://127.0.0.1:{port}/v1'}}\n")
SHADOW = "    shadow: {{share: {share}, backends: [up, up2]}}\n"
LIMITS = "shadow_limits: {{max_in_flight: 8, max_queue: 10000}}\n"  # the bench counts work, not drops


def policies(fake_port: int) -> dict[str, str]:
    with_shadow = BOTH + SHADOW
    return {"off": BOTH.format(port=fake_port), "share0": with_shadow.format(port=fake_port, share=0.0),
            "share1": (with_shadow + LIMITS).format(port=fake_port, share=1.0)}


def micro(calls: int = 200_000) -> None:
    """ns per `tap()` for a request that is not shadowed: the whole cost shadowing adds to it."""
    import timeit
    from types import SimpleNamespace

    from gateway.exchange import Exchange
    from gateway.shadow_tap import tap
    from policies.compiled import compile_policy
    from policies.loader import load_policy

    text = BOTH.format(port=1).replace("  bench:\n", "  bench:\n    shadow: {share: 0.05, backends: [up, up2]}\n")
    text += "  plain: {}\n  zero: {shadow: {share: 0.0, backends: [up, up2]}}\n"
    compiled = compile_policy(load_policy(text).policy)
    empty = min(timeit.repeat(lambda: None, number=calls, repeat=5)) / calls * 1e9
    svc, response = SimpleNamespace(shadow=object()), object()
    for team in ("plain", "zero", "bench"):
        ex = Exchange.begin("chat", None)
        ex.team, ex.policy = team, compiled
        while team == "bench" and tap(svc, ex, {}, response) is not response:  # type: ignore[arg-type]
            ex = Exchange.begin("chat", None)  # one the 5% does not sample
            ex.team, ex.policy = team, compiled
        best = min(timeit.repeat(lambda ex=ex: tap(svc, ex, {}, response), number=calls, repeat=5))  # type: ignore[arg-type,misc]
        label = {"plain": "no shadow:", "zero": "share: 0", "bench": "share: 0.05, not sampled"}[team]
        print(f"tap(), {label}: {best / calls * 1e9 - empty:.0f} ns (less the {empty:.0f} ns of calling a lambda)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--micro", action="store_true", help="time the added call alone, in-process")
    parser.add_argument("--base", type=Path, help="a tree without shadow traffic (e.g. a git archive of its parent)")
    parser.add_argument("--requests", type=int, default=400, help="non-streamed requests per CPU sample")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.micro:
        print(f"load average: {os.getloadavg()[0]:.2f}")
        micro()
        return 0
    print(f"load average at start: {os.getloadavg()[0]:.2f} (a shared machine: compare only side by side)")
    errors: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="hybridgw-shadow-") as tmp:
        workdir = Path(tmp)
        fake, fake_port = start_fake("--chunks", str(CHUNKS))
        started = [fake]
        sink, otlp_url = start_discard()
        try:
            runs = [(name, ROOT, text) for name, text in policies(fake_port).items()]
            if args.base is not None:
                runs.insert(0, ("base", args.base.resolve(), BOTH.format(port=fake_port)))
            gateways = []
            for name, tree, text in runs:
                config = workdir / f"{name}.yaml"
                config.write_text(text)
                key = key_of(tree, config, workdir, name)
                gw = start_gateway(name, tree, config, workdir, None, "otlp", otlp_url)
                started.append(gw)
                gateways.append(Gateway(Server(name, gw.port, key, "m"), gw.popen.pid))  # type: ignore[attr-defined]
            results = asyncio.run(measure(Server("direct", fake_port, "none", "m"), gateways, args.requests,
                                          args.rounds, errors))
            shadowed = {name: gw.output().count('.shadow","time"') for (name, _, _), gw in zip(runs, started[1:])}
        finally:
            for proc in started:
                procs.stop(proc)
            sink.shutdown()
    print(report(results, runs[0][0]))
    print("shadow calls recorded: " + ", ".join(f"{k} {v}" for k, v in shadowed.items()))
    return finish(errors)


if __name__ == "__main__":
    raise SystemExit(main())
