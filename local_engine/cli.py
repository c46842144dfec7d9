"""``hybridgw engine``: load a model, start the step loop and serve the OpenAI-compatible API.

Prints one ready line (with the URL) once the socket accepts connections.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from typing import TYPE_CHECKING

from local_engine.body_limit import DEFAULT_MAX_BODY_BYTES
from local_engine.config import ConfigError, EngineConfig

if TYPE_CHECKING:
    from fastapi import FastAPI


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hybridgw engine", description=__doc__)
    _model_args(p.add_argument_group("model and KV pool"))
    _scheduling_args(p.add_argument_group("scheduling"))
    _kernel_args(p.add_argument_group("CPU threads and kernels"))
    _server_args(p.add_argument_group("server"))
    return p.parse_args(argv)


def _model_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--model", default="smollm2", help="smollm2, tiny-random, a .gguf file or an HF folder")
    g.add_argument("--served-model-name", action="append", default=[],
                   help="extra names requests may use for this model (repeatable)")
    g.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    g.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: the device's best)")
    g.add_argument("--kv-dtype", default=None,
                   help="KV cache dtype: fp32, bf16, fp16 or fp8 (default: same as --dtype)")
    g.add_argument("--kv-scales", action=argparse.BooleanOptionalAction, default=True,
                   help="fp8 KV: per-layer, per-head scales calibrated at load (default); --no-kv-scales: plain cast")
    pool = g.add_mutually_exclusive_group()
    pool.add_argument("--kv-cache-bytes", type=int, default=None, help="KV pool size in bytes")
    pool.add_argument("--gpu-memory-fraction", type=float, default=0.85,
                      help="share of free GPU memory for the KV pool (CUDA)")
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--max-model-len", type=int, default=None)
    g.add_argument("--no-prefix-caching", action="store_true")


def _scheduling_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--max-num-seqs", type=int, default=64)
    g.add_argument("--max-num-batched-tokens", type=int, default=None,
                   help="per-step token budget: decodes first, prompt chunks the rest (default: at least 64 "
                        "prompt tokens beside the decodes on CPU, 2048 on GPU; smaller bounds the stall a long "
                        "prompt causes)")
    g.add_argument("--context-cost-tokens", type=int, default=0,
                   help="while decodes run, a prompt token at context c costs 1 + c/this of the budget, so late "
                        "chunks of a long prompt are smaller (default 0: tokens only; docs/benchmarks.md)")
    g.add_argument("--burst-batched-tokens", type=int, default=256,
                   help="while decodes run and several new prompts wait, a step may admit up to this many of their "
                        "tokens (default 256; 0: off, the 64-token floor only)")
    g.add_argument("--max-waiting", type=int, default=256, help="queued requests before 503")
    g.add_argument("--enable-priority", action="store_true", help="schedule by the request's priority field")


def _kernel_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: every core on machines of <= 4 cores, torch's choice above; "
                        "one core fewer with --engine-core thread)")
    g.add_argument("--small-step-threads", type=int, default=None,
                   help="CPU threads of steps of at most 16 tokens (default: 1 on CPUs of <= 4 cores, else "
                        "--threads; 0: every step on --threads)")
    g.add_argument("--deterministic", action="store_true",
                   help="batch-invariant kernels: a request's output and logprobs never depend on what else "
                        "runs (slower; see docs/benchmarks.md)")
    g.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=None,
                   help="replay decode steps as CUDA graphs at bucketed batch sizes (default: on with CUDA "
                        "unless --deterministic, off on CPU)")
    g.add_argument("--activations", choices=("bf16", "int8"), default=None,
                   help="the native 4-bit matmuls' input rows: int8 (quantized per 32, integer dot products; the "
                        "default) or bf16 (default with --deterministic); env HYBRIDGW_ACTIVATIONS")


def _server_args(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, default=8100, help="0 picks a free port (see the ready line)")
    g.add_argument("--max-body-bytes", type=_positive_int, default=DEFAULT_MAX_BODY_BYTES,
                   help="larger request bodies get 413 (default 4 MiB, as the gateway's)")
    g.add_argument("--engine-core", choices=("process", "thread"), default="process",
                   help="where the step loop runs: a process of its own (default) or a thread of the server's")
    g.add_argument("--log-level", default="warning")


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(
        model=args.model, device=args.device, dtype=args.dtype, kv_dtype=args.kv_dtype,
        kv_cache_bytes=args.kv_cache_bytes, gpu_memory_fraction=args.gpu_memory_fraction,
        cpu_threads=args.threads, small_step_threads=args.small_step_threads,
        block_size=args.block_size, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, max_model_len=args.max_model_len,
        max_waiting=args.max_waiting, enable_priority=args.enable_priority,
        enable_prefix_caching=not args.no_prefix_caching, deterministic=args.deterministic,
        kv_scales=args.kv_scales, cuda_graphs=args.cuda_graphs, context_cost_tokens=args.context_cost_tokens,
        burst_batched_tokens=args.burst_batched_tokens,
        activations=args.activations)


def passive_openmp_waits() -> None:
    """OpenMP threads sleep at barriers instead of spinning, unless the user set OMP_WAIT_POLICY.

    On cores other jobs share, a spinning thread holds the core its late peer needs: 2 threads, load
    ~10 on 2 cores, batch-1 decode step p50 0.5-1.2 s spinning vs ~0.1 s passive (docs/benchmarks.md).
    libgomp reads it once, when torch loads it, so this must run before torch is imported.
    """
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"hybridgw engine: {exc}", file=sys.stderr)
        return 2
    passive_openmp_waits()
    # Imported here: torch and the model code load only when an engine really starts.
    from local_engine.bootstrap import build_server

    started = time.perf_counter()
    try:
        app, info, limits = build_server(config, extra_names=tuple(args.served_model_name), core=args.engine_core,
                                         max_body_bytes=args.max_body_bytes)
    except (FileNotFoundError, ValueError) as exc:
        print(f"hybridgw engine: cannot load {config.model!r}: {exc}", file=sys.stderr)
        return 1
    load_s = time.perf_counter() - started
    # Everything built so far lives as long as the process: keep it out of the GC's scans, so
    # collections during serving stay short (fewer inter-token stalls).
    gc.collect()
    gc.freeze()
    summary = (f"model={info.model_name} device={info.device} torch_threads={info.torch_threads} "
               f"kernels={info.kernels} kv_dtype={info.kv_dtype} deterministic={int(config.deterministic)} "
               f"blocks={limits.num_blocks_total}x{limits.block_size} "
               f"max_model_len={limits.max_model_len} core={args.engine_core} load_s={load_s:.1f}")
    return asyncio.run(_serve(app, args.host, args.port, args.log_level, summary))


async def _serve(app: FastAPI, host: str, port: int, log_level: str, summary: str) -> int:
    import uvicorn

    from observability.http_parse_errors import OpenAIErrorHttpToolsProtocol

    # What httptools cannot parse is answered OpenAI-shaped (code invalid_http_request), as the gateway does.
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           http=OpenAIErrorHttpToolsProtocol, timeout_graceful_shutdown=5))
    engine = app.state.engine

    def on_engine_dead(reason: str) -> None:
        # A server without its engine only answers 503: exit (after the failed streams have sent
        # their error frames), so whatever supervises it (hybridgw serve, systemd, k8s) restarts it.
        print(f"hybridgw engine: {reason}; shutting down", file=sys.stderr, flush=True)
        asyncio.get_running_loop().call_later(0.2, setattr, server, "should_exit", True)

    engine.on_dead = on_engine_dead
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.05)
    if server.started:
        bound = server.servers[0].sockets[0].getsockname()[1]
        print(f"hybridgw engine ready on http://{host}:{bound}/v1 {summary}", flush=True)
    await task
    return 0 if server.started and engine.dead_reason is None else 1
