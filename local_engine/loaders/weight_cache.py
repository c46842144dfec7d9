"""On-disk cache of converted (dequantised, renamed, cast) weights, so a second start is quick.

Keyed by the source file's path, size and mtime plus the target dtype; lives in
$HYBRIDGW_CACHE_DIR or ~/.cache/hybridgw/weights. A cache that cannot be written is skipped.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

_FORMAT_VERSION = 3  # 2: 4-bit codes stored beside the cast weights; 3: the LM head's too
log = logging.getLogger(__name__)


def cache_dir() -> Path:
    root = os.environ.get("HYBRIDGW_CACHE_DIR")
    return Path(root) / "weights" if root else Path.home() / ".cache" / "hybridgw" / "weights"


def cache_key(source: Path, dtype: torch.dtype) -> str:
    """"<source>.<dtype>.v<format>.<stamp>": one entry per source file and dtype; the stamp (size,
    mtime) changes when the file does, and store() then drops the stale sibling."""
    stat = source.stat()
    source_id = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:16]
    stamp = hashlib.sha256(f"{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return f"{source_id}.{str(dtype).removeprefix('torch.')}.v{_FORMAT_VERSION}.{stamp}"


def load(key: str) -> dict[str, torch.Tensor] | None:
    path = cache_dir() / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        tensors = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as exc:
        # a torn or foreign file: convert again (and overwrite it)
        log.warning("weight cache %s unreadable (%s); converting again", path, exc)
        return None
    return tensors if isinstance(tensors, dict) else None


def store(key: str, tensors: dict[str, torch.Tensor]) -> Path | None:
    """Write atomically (temp file + rename) so a concurrent reader never sees half a file."""
    directory = cache_dir()
    tmp: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
        os.close(fd)
        torch.save(tensors, tmp)
        final = directory / f"{key}.pt"
        os.replace(tmp, final)
        _drop_siblings(directory, key)
        return final
    except OSError as exc:
        log.warning("weight cache not written to %s: %s", directory, exc)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        return None


def _drop_siblings(directory: Path, key: str) -> None:
    """Remove older entries for the same source file and dtype (another format version or stamp)."""
    source_id, dtype = key.split(".")[:2]
    for path in directory.glob(f"{source_id}.{dtype}.*.pt"):
        if path.name != f"{key}.pt":
            path.unlink(missing_ok=True)
