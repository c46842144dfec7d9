"""The tokenizer of a model source, read from the model's own files without loading its weights.

No torch: the server process of a split engine loads only this.
"""
from __future__ import annotations

from typing import Any

from local_engine.loaders import gguf
from local_engine.loaders.registry import ModelSource, smollm2_gguf_path
from local_engine.tokenizer import Tokenizer


def tokenizer_for(source: ModelSource, gguf_metadata: dict[str, Any] | None = None) -> Tokenizer:
    """``gguf_metadata`` saves a second read of a GGUF file the caller has open already."""
    if source.kind == "hf":
        assert source.path is not None
        return Tokenizer.from_hf_folder(source.path)
    if gguf_metadata is None:
        path = smollm2_gguf_path() if source.kind == "tiny-random" else source.path
        assert path is not None
        gguf_metadata = gguf.open_gguf(path).metadata
    return Tokenizer.from_gguf_metadata(gguf_metadata)
