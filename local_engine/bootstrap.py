"""Build a ready-to-serve engine from an EngineConfig: start the engine core, wire streams and app.

Two cores: "process" (default) loads the model in a process of its own and keeps this one free of
torch; "thread" runs the step loop in a thread of this process (one process, for debugging). The
model itself is loaded by engine_build.py, in whichever process runs the engine.
"""
from __future__ import annotations

import time
from typing import Literal

from fastapi import FastAPI

from local_engine.admission import EngineLimits
from local_engine.async_engine import AsyncEngine, EngineCore
from local_engine.body_limit import DEFAULT_MAX_BODY_BYTES
from local_engine.config import EngineConfig
from local_engine.core_process import ProcessCore
from local_engine.core_thread import ThreadCore
from local_engine.loaders.registry import resolve_model
from local_engine.loaders.tokenizer_source import tokenizer_for
from local_engine.server import ServerInfo, create_app
from local_engine.tokenizer import Tokenizer
from local_engine.tracing import RequestTracer, engine_tracing

CoreKind = Literal["process", "thread"]


def _served_names(model_name: str, config: EngineConfig, extra_names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((model_name, config.model, *extra_names)))


def _thread_core(config: EngineConfig, extra_names: tuple[str, ...]) -> tuple[EngineCore, Tokenizer, ServerInfo]:
    # imported here, not above: the thread core loads torch into this process, the process core never does
    import torch

    from local_engine.engine_build import build_engine, load

    loaded = load(config)
    runner = loaded.runner
    info = ServerInfo(model_name=loaded.model_name,
                      served_model_names=_served_names(loaded.model_name, config, extra_names),
                      kv_bytes_per_token=runner.kv_bytes_per_token,
                      kv_dtype=str(runner.kv_cache.dtype).removeprefix("torch."),
                      device=str(runner.device), created=int(time.time()), torch_threads=torch.get_num_threads(),
                      kernels=runner.model.kernels_path)
    return ThreadCore(build_engine(config, loaded)), loaded.tokenizer, info


def _process_core(config: EngineConfig, extra_names: tuple[str, ...]) -> tuple[EngineCore, Tokenizer, ServerInfo]:
    tokenizer = tokenizer_for(resolve_model(config.model))  # fails fast, before the model loads
    core = ProcessCore.launch(config)
    facts = core.facts
    info = ServerInfo(model_name=facts.model_name,
                      served_model_names=_served_names(facts.model_name, config, extra_names),
                      kv_bytes_per_token=facts.kv_bytes_per_token, kv_dtype=facts.kv_dtype, device=facts.device,
                      created=int(time.time()), torch_threads=facts.num_threads, kernels=facts.kernels)
    return core, tokenizer, info


def build_server(config: EngineConfig, extra_names: tuple[str, ...] = (), core: CoreKind = "process",
                 max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> tuple[FastAPI, ServerInfo, EngineLimits]:
    engine_core, tokenizer, info = (_process_core if core == "process" else _thread_core)(config, extra_names)
    async_engine = AsyncEngine(engine_core)
    tracing = engine_tracing()
    if tracing is not None:
        async_engine.request_tracer = RequestTracer(tracing.provider.get_tracer("hybridgw.engine"), info.model_name)
    app = create_app(async_engine, tokenizer, info, on_shutdown=tracing.shutdown if tracing else None,
                     max_body_bytes=max_body_bytes)
    return app, info, engine_core.limits
