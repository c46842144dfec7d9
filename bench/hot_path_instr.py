"""Instructions per request and per relayed frame, by stage, counted by callgrind: deterministic where the
timings of this shared box are not. `hybridgw serve` (full path on, as bench/hot_path.py: limits, a USD
budget, the SQLite ledger, the access log, OTLP spans at ratio 1) runs under valgrind with instrumentation
off until the warm-up is done; one client (another process) then sends requests one at a time; the event-loop
thread's instructions are read per request, and with --stages per stage (bench/instr_stages.py's markers).

Run: .venv/bin/python -m bench.hot_path_instr [--tree NAME=PATH ...] [--requests 100] [--stages]
     [--kind plain|stream|paced] [--chunks 16 [40]] [--gap-ms 30]
paced: streams whose chunks come --gap-ms apart, each its own upstream read and client write. Given two
--chunks, each tree runs at both and the slope is printed: instructions per extra relayed frame, net of the
idle loop (--idle-ips a second of wall time counted), and with --stages each stage's own share of it.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.stack import create_key, start_fake
from bench.workers_throughput import POLICY
from tests.support import procs

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(tempfile.gettempdir()) / "hg-instr-slots"


def wrap_main() -> None:
    """Inside the gateway's process: mark the stages (when HG_STAGE_MAP names where their slots go), then
    run `hybridgw` as the CLI would."""
    import runpy
    import signal

    sys.argv = ["hybridgw", *sys.argv[2:]]
    out = os.environ.get("HG_STAGE_MAP")
    if out:
        import gateway.http_guard as guard
        from bench import instr_stages

        marker = instr_stages.Marker(instr_stages.build_slots(CACHE))
        instr_stages.install(marker)
        made = guard.guarded_protocol

        def guarded(bounds):  # type: ignore[no-untyped-def]
            cls = made(bounds)
            cls.data_received = instr_stages._wrap(marker, "uvicorn + httptools", cls.data_received)
            return cls
        guard.guarded_protocol = guarded
        signal.signal(signal.SIGUSR2, lambda *_: instr_stages.write_map(marker, out))
        if os.environ.get("HG_TASK_DUMP"):  # debugging a hang: SIGUSR1 prints every task's stack
            import asyncio

            def dump(*_: object) -> None:
                for task in asyncio.all_tasks(asyncio.events._get_running_loop()):
                    task.print_stack(file=sys.stderr)
            signal.signal(signal.SIGUSR1, dump)
    runpy.run_module("gateway.cli", run_name="__main__", alter_sys=True)


def request_body(kind: str, chunks: int, gap_ms: float) -> bytes:
    data: dict = {"model": "m", "messages": [{"role": "user", "content": "say something short"}], "max_tokens": 16,
                  "stream": kind != "plain"}
    if kind == "paced":
        data["user"] = f"fake:delay_ms={gap_ms};chunks={chunks}"
    elif kind == "stream":
        data["user"] = f"fake:chunks={chunks}"
    return json.dumps(data).encode()


def send_all(port: int, key: str, body: bytes, count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=float(os.environ.get("HG_CLIENT_TIMEOUT", "600")))
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    for _ in range(count):
        conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200 or b"error" in data[:200]:
            raise RuntimeError(f"request failed: {response.status} {data[:300]!r}")
    conn.close()


def inclusive(path: Path) -> tuple[int, dict[str, tuple[int, int]]]:
    """(the thread's total Ir, {hg_slot_N: (inclusive Ir, calls)}) from one callgrind file."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
                         capture_output=True, text=True, check=True).stdout
    found = re.search(r"^\s*([\d,]+).*PROGRAM TOTALS", out, re.M)
    if found is None:  # a thread that ran nothing while counted
        return 0, {}
    slots = {m.group(2): int(m.group(1).replace(",", ""))
             for m in re.finditer(r"^\s*([\d,]+) \([^)]*\)\s+\S*:(hg_slot_\d+) ", out, re.M)}
    names: dict[str, str] = {}
    calls: dict[str, int] = {}
    callee = ""
    for line in path.read_text(errors="replace").splitlines():  # calls: the `calls=` lines into each slot
        if line.startswith("cfn="):
            m = re.match(r"cfn=\((\d+)\)(?: (.*))?", line)
            if m:
                if m.group(2):
                    names[m.group(1)] = m.group(2)
                callee = names.get(m.group(1), "")
        elif line.startswith("fn="):
            m = re.match(r"fn=\((\d+)\)(?: (.*))?", line)
            if m and m.group(2):
                names[m.group(1)] = m.group(2)
        elif line.startswith("calls=") and callee in slots:
            calls[callee] = calls.get(callee, 0) + int(line[6:].split()[0])
    return int(found.group(1).replace(",", "")), {k: (v, calls.get(k, 0)) for k, v in slots.items()}


def stage_rows(slots: dict[str, tuple[int, int]], slot_map: dict[str, list], requests: int) -> list[tuple[str, float]]:
    """Each stage's own instructions per request: its slots minus the slots of stages met inside it."""
    own: dict[str, float] = {}
    for name, (ir, _) in slots.items():
        outer, stage = slot_map.get(name, [None, name])
        own[stage] = own.get(stage, 0) + ir
        if outer is not None:
            own[outer] = own.get(outer, 0) - ir
    return sorted(((s, v / requests) for s, v in own.items()), key=lambda r: -r[1])


def measure(name: str, tree: Path, config: Path, workdir: Path, args: argparse.Namespace) -> dict:
    env = {"HYBRIDGW_DATA_DIR": str(workdir / f"data-{name}"), "REDIS_URL": "", "PYTHONPATH": f"{tree}:{ROOT}",
           "HYBRIDGW_TRACES": "otlp", "HYBRIDGW_WORKERS": "1", "PYTHONHASHSEED": "0", "HYBRIDGW_TRACE_SAMPLE_RATIO": "1.0",
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": args.otlp_url}
    key = create_key(config, {k: env[k] for k in ("HYBRIDGW_DATA_DIR", "REDIS_URL", "PYTHONPATH")}, cwd=tree)
    stage_map = workdir / f"stages-{name}.json"
    if args.stages:
        env["HG_STAGE_MAP"] = str(stage_map)
    out = workdir / f"cg-{name}"
    port = procs.free_port()
    wall = 0.0
    gw = procs.start(["valgrind", "--tool=callgrind", "--instr-atstart=no", "--separate-threads=yes",
                      f"--callgrind-out-file={out}", sys.executable, "-m", "bench.hot_path_instr", "wrap", "serve",
                      "--config", str(config), "--port", str(port)], env=env, cwd=tree, name=f"gw-{name}")
    try:
        procs.wait_http(f"http://127.0.0.1:{port}/healthz", gw, timeout_s=600)
        body = request_body(args.kind, args.chunks, args.gap_ms)
        send_all(port, key, body, args.warmup)
        pid = str(gw.popen.pid)
        subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        started = time.monotonic()
        send_all(port, key, body, args.requests)
        time.sleep(1.0 + args.idle_s)  # the last record's settlement and log line
        wall = time.monotonic() - started
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
        if args.stages:
            os.kill(gw.popen.pid, 12)  # SIGUSR2: the slot map
            deadline = time.monotonic() + 60
            while not stage_map.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
    finally:
        procs.stop(gw)
    files = sorted(workdir.glob(f"cg-{name}.1-*"))
    per_thread = {f.name.rsplit("-", 1)[1]: inclusive(f) for f in files}
    loop_total, slots = per_thread["01"]
    per = max(args.requests, 1)
    return {"loop": loop_total / per, "wall_s": wall, "loop_total": loop_total,
            "threads": {t: v[0] / per for t, v in per_thread.items()},
            "stages": stage_rows(slots, json.loads(stage_map.read_text()), per) if args.stages else [],
            "slots": slots}


def net(r: dict, requests: int, idle_ips: float) -> float:
    """The loop thread's instructions per request less the idle loop's for the wall time counted."""
    return r["loop"] - idle_ips * r["wall_s"] / max(requests, 1)


def print_slope(name: str, small: tuple[int, dict], big: tuple[int, dict], args: argparse.Namespace) -> None:
    """Per extra relayed frame: the difference of two stream lengths' counts over the difference of frames."""
    (n0, r0), (n1, r1) = small, big
    frames = n1 - n0
    per = (net(r1, args.requests, args.idle_ips) - net(r0, args.requests, args.idle_ips)) / frames
    print(f"{name}: per extra relayed frame {per / 1e3:.1f} k instructions on the loop thread (net of the idle "
          f"loop; {n0} → {n1} chunks; intercept {(net(r0, args.requests, args.idle_ips) - n0 * per) / 1e3:.0f} k)")
    if r0["stages"]:
        s0, s1 = dict(r0["stages"]), dict(r1["stages"])
        rows = sorted(((k, (s1.get(k, 0.0) - s0.get(k, 0.0)) / frames) for k in set(s0) | set(s1)), key=lambda r: -r[1])
        marked = (r1["loop"] - r0["loop"]) / frames
        for stage, ir in rows:
            if abs(ir) >= 50:
                print(f"| {stage} | {ir / 1e3:.1f} k |")
        print(f"| the rest: asyncio/uvloop, tasks, unmarked glue (marked loop {marked / 1e3:.1f} k a frame) | "
              f"{(marked - sum(v for _, v in rows)) / 1e3:.1f} k |")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "wrap":
        wrap_main()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH (default: this checkout)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--kind", choices=("plain", "stream", "paced"), default="plain")
    parser.add_argument("--chunks", type=int, nargs="+", default=[16], help="one, or two for the per-frame slope")
    parser.add_argument("--idle-ips", type=float, default=0.43e6,
                        help="the idle loop's instructions a second (docs/benchmarks.md round 6: 0.43 M)")
    parser.add_argument("--gap-ms", type=float, default=30)
    parser.add_argument("--stages", action="store_true")
    parser.add_argument("--idle-s", type=float, default=0.0, help="seconds counted with no request (the idle loop)")
    args = parser.parse_args()
    from bench.otlp_discard import start_discard

    trees = [(n, Path(p).resolve()) for n, p in (t.split("=", 1) for t in args.tree)] or [("this", ROOT)]
    fake, fake_port = start_fake()
    sink, args.otlp_url = start_discard()
    workdir = Path(tempfile.mkdtemp(prefix="hp-instr-"))
    config = workdir / "policy.yaml"
    config.write_text(POLICY.format(port=fake_port))
    try:
        lengths, by_tree = args.chunks, {}
        for (name, tree), chunks in ((t, n) for t in trees for n in lengths):
            args.chunks = chunks
            label = name if len(lengths) == 1 else f"{name}-{chunks}"
            r = measure(label, tree, config, workdir, args)
            by_tree.setdefault(name, []).append((chunks, r))
            name = label
            threads = ", ".join(f"thread {t}: {v / 1e3:.0f} k" for t, v in sorted(r["threads"].items()))
            print(f"{name} ({args.kind}, {args.requests} requests): loop thread {r['loop'] / 1e3:.1f} k instructions "
                  f"per request ({threads}; {r['loop_total'] / 1e6:.1f} M in {r['wall_s']:.1f} s counted)", flush=True)
            for stage, ir in r["stages"]:
                print(f"| {stage} | {ir / 1e3:.1f} k | {ir / r['loop']:.1%} |")
            if r["stages"]:
                print(f"| the rest: asyncio/uvloop, tasks, unmarked glue | "
                      f"{(r['loop'] - sum(v for _, v in r['stages'])) / 1e3:.1f} k |")
                print("calls per request:", {k: round(v[1] / args.requests, 2) for k, v in r["slots"].items()})
        for name, runs in by_tree.items():
            if len(runs) == 2:
                print_slope(name, runs[0], runs[1], args)
    finally:
        sink.shutdown()
        procs.stop(fake)
    return 0


if __name__ == "__main__":
    sys.exit(main())
