"""Keep token counting and litellm offline: point tiktoken at litellm's bundled encodings and
tell litellm to use its bundled price table. Call before tiktoken or litellm is first used."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def litellm_tokenizers_dir() -> Path | None:
    """litellm's folder of tiktoken files (named by the sha1 of their URLs), found without importing it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"
    return folder if folder.is_dir() else None


def configure_offline_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    """Set the two variables unless the user already set them (idempotent)."""
    environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if "TIKTOKEN_CACHE_DIR" not in environ:
        folder = litellm_tokenizers_dir()
        if folder is not None:
            environ["TIKTOKEN_CACHE_DIR"] = str(folder)
