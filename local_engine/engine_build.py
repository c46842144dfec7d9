"""Load the model and build the LLMEngine around it, in the process that runs the engine: the core
process (core_process.core_main), or the server's own with the thread core. Imports torch."""
from __future__ import annotations

from local_engine.config import EngineConfig
from local_engine.engine import LLMEngine
from local_engine.loading import LoadedModel, load_engine_model
from local_engine.runner_threads import available_cpus, small_step_threads
from local_engine.tokenizer import IncrementalDetokenizer


def load(config: EngineConfig, *, shares_process_with_server: bool = True) -> LoadedModel:
    return load_engine_model(
        config.model, device=config.device, dtype=config.dtype, kv_dtype=config.kv_dtype,
        kv_cache_bytes=config.kv_cache_bytes, gpu_memory_fraction=config.gpu_memory_fraction,
        block_size=config.block_size, max_model_len=config.max_model_len, num_threads=config.cpu_threads,
        shares_process_with_server=shares_process_with_server, deterministic=config.deterministic,
        small_step_threads=small_step_threads(config.small_step_threads, available_cpus()),
        kv_scales=config.kv_scales, cuda_graphs=config.cuda_graphs, activations=config.activations)


def build_engine(config: EngineConfig, loaded: LoadedModel) -> LLMEngine:
    tokenizer = loaded.tokenizer
    return LLMEngine(loaded.runner, config, eos_token_ids=tuple(sorted(tokenizer.eos_token_ids)),
                     detokenizer_factory=lambda: IncrementalDetokenizer(tokenizer),
                     max_model_len=loaded.max_model_len)
