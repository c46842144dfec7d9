"""Read a Hugging Face model folder: config.json -> ModelConfig, *.safetensors -> tensors.

The safetensors format (8-byte header length, JSON header, raw little-endian data) is read
directly through a memory map, so no extra package is needed.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from local_engine.model_config import ModelConfig, RopeScaling

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
                 "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8}


class HFModelError(ValueError):
    """The folder is not a Hugging Face model this engine can run."""


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def model_config(folder: Path) -> ModelConfig:
    cfg: dict[str, Any] = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    archs = cfg.get("architectures") or []
    if not any(a in SUPPORTED_ARCHITECTURES for a in archs):
        raise HFModelError(f"{folder}: architectures {archs} not supported (supported: {SUPPORTED_ARCHITECTURES})")
    num_heads = int(cfg["num_attention_heads"])
    max_pos = int(cfg.get("max_position_embeddings", 2048))
    if cfg.get("sliding_window") and cfg.get("use_sliding_window", True):
        max_pos = min(max_pos, int(cfg["sliding_window"]))  # full attention is exact only up to the window
    eos = cfg.get("eos_token_id")
    return ModelConfig(
        name=str(cfg.get("_name_or_path") or folder.name),
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=int(cfg["hidden_size"]),
        intermediate_size=int(cfg["intermediate_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=num_heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or num_heads),
        head_dim=int(cfg.get("head_dim") or cfg["hidden_size"] // num_heads),
        rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        rope_theta=float(cfg.get("rope_theta", 10000.0)),
        rope_scaling=_rope_scaling(cfg.get("rope_scaling")),
        max_position_embeddings=max_pos,
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        attention_bias=bool(cfg.get("attention_bias", "Qwen2ForCausalLM" in archs)),
        bos_token_id=cfg.get("bos_token_id") if isinstance(cfg.get("bos_token_id"), int) else None,
        eos_token_ids=tuple(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else []),
    )


def _rope_scaling(raw: dict[str, Any] | None) -> RopeScaling | None:
    if not raw:
        return None
    kind = raw.get("rope_type") or raw.get("type")
    if kind == "default":
        return None
    if kind != "llama3":
        raise HFModelError(f"RoPE scaling {kind!r} is not supported (only llama3)")
    return RopeScaling(factor=float(raw["factor"]), low_freq_factor=float(raw["low_freq_factor"]),
                       high_freq_factor=float(raw["high_freq_factor"]),
                       original_max_position_embeddings=int(raw["original_max_position_embeddings"]))


def safetensors_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise HFModelError(f"{folder}: no *.safetensors weights (pytorch_model.bin is not supported)")
    return files


def read_safetensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every tensor in one .safetensors file; tensors share a read-only memory map."""
    with path.open("rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        header: dict[str, Any] = json.loads(fh.read(header_len))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_len)
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        if dtype not in _NUMPY_DTYPES:
            raise HFModelError(f"{path.name}: tensor {name} has unsupported dtype {dtype}")
        start, end = info["data_offsets"]
        array = data[start:end].view(_NUMPY_DTYPES[dtype]).reshape(info["shape"])
        tensor = torch.from_numpy(np.array(array))  # a private copy: the map is read-only
        yield name, tensor.view(torch.bfloat16) if dtype == "BF16" else tensor


def iter_state_dict(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    for path in safetensors_files(folder):
        yield from read_safetensors(path)
