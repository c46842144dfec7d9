"""Build a ready-to-serve engine from an EngineConfig: load the model, wire engine, async loop and app."""
from __future__ import annotations

import time

from fastapi import FastAPI

from local_engine.async_engine import AsyncEngine
from local_engine.config import EngineConfig
from local_engine.engine import LLMEngine
from local_engine.loading import LoadedModel, load_engine_model
from local_engine.server import ServerInfo, create_app
from local_engine.tokenizer import IncrementalDetokenizer
from local_engine.tracing import RequestTracer, engine_tracing


def load(config: EngineConfig) -> LoadedModel:
    return load_engine_model(
        config.model, device=config.device, dtype=config.dtype, kv_dtype=config.kv_dtype,
        kv_cache_bytes=config.kv_cache_bytes, gpu_memory_fraction=config.gpu_memory_fraction,
        block_size=config.block_size, max_model_len=config.max_model_len, num_threads=config.cpu_threads)


def build_engine(config: EngineConfig, loaded: LoadedModel) -> LLMEngine:
    tokenizer = loaded.tokenizer
    return LLMEngine(loaded.runner, config, eos_token_ids=tuple(sorted(tokenizer.eos_token_ids)),
                     detokenizer_factory=lambda: IncrementalDetokenizer(tokenizer),
                     max_model_len=loaded.max_model_len)


def server_info(config: EngineConfig, loaded: LoadedModel, extra_names: tuple[str, ...] = ()) -> ServerInfo:
    runner = loaded.runner
    names = tuple(dict.fromkeys((loaded.model_name, config.model, *extra_names)))
    return ServerInfo(model_name=loaded.model_name, served_model_names=names,
                      kv_bytes_per_token=runner.kv_bytes_per_token,
                      kv_dtype=str(runner.kv_cache.dtype).removeprefix("torch."),
                      device=str(runner.device), created=int(time.time()))


def build_server(config: EngineConfig, extra_names: tuple[str, ...] = ()) -> tuple[FastAPI, ServerInfo, LLMEngine]:
    loaded = load(config)
    engine = build_engine(config, loaded)
    info = server_info(config, loaded, extra_names)
    async_engine = AsyncEngine(engine)
    tracing = engine_tracing()
    if tracing is not None:
        async_engine.request_tracer = RequestTracer(tracing.provider.get_tracer("hybridgw.engine"), info.model_name)
    app = create_app(async_engine, loaded.tokenizer, info, on_shutdown=tracing.shutdown if tracing else None)
    return app, info, engine
