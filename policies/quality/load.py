"""Load the shipped difficulty model: wordllama's bundled 256-d embeddings and tokenizer (never the
hub) and the trained weights in `difficulty_weights.json` beside this module."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from policies.quality.difficulty import DifficultyScorer, DifficultyWeights, Encode

WEIGHTS_FILE = Path(__file__).with_name("difficulty_weights.json")
EMBEDDING_DIM = 256


@dataclass(frozen=True)
class Embeddings:
    """The static token embeddings and the tokenizer that maps words to their rows."""

    matrix: np.ndarray  # (vocab, 256) float32
    encode: Encode


def load_embeddings() -> Embeddings:
    """wordllama's bundled files only: `disable_download` and its own folder as the cache, so a
    missing file is an error here, never a download."""
    import wordllama  # imported here: ~0.3 s, and only policies that use `difficulty` need it

    model = wordllama.WordLlama.load(dim=EMBEDDING_DIM, cache_dir=Path(wordllama.__file__).parent,
                                     disable_download=True)
    tokenizer = model.tokenizer
    tokenizer.no_padding()  # words are encoded one per row; padding would add id 0 to short ones
    tokenizer.no_truncation()

    def encode(piece: str) -> list[int]:
        # One call per piece: encode_batch's thread pool costs more than it saves for a few words.
        try:
            return tokenizer.encode(piece, add_special_tokens=False).ids
        except TypeError:  # a lone surrogate ("\ud800" is valid JSON, not valid UTF-8)
            return tokenizer.encode(piece.encode("utf-8", "replace").decode("utf-8"), add_special_tokens=False).ids

    return Embeddings(np.asarray(model.embedding, dtype=np.float32), encode)


def read_weights(path: Path = WEIGHTS_FILE) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the difficulty weights: {exc}") from None
    if len(data.get("weights", ())) != EMBEDDING_DIM:
        raise ValueError(f"{path}: expected {EMBEDDING_DIM} weights")
    return data


def fold_weights(data: dict[str, Any], matrix: np.ndarray) -> DifficultyWeights:
    """One score per token id: embedding row · weights (linear, so the mean commutes with it)."""
    w = np.asarray(data["weights"], dtype=np.float64)
    table = matrix.astype(np.float64) @ w  # (vocab,)
    return DifficultyWeights(table, float(data["bias"]), float(data.get("length_weight", 0.0)),
                             str(data.get("name", "difficulty")))


def load_scorer(path: Path = WEIGHTS_FILE, embeddings: Embeddings | None = None) -> DifficultyScorer:
    emb = embeddings or load_embeddings()
    return DifficultyScorer(fold_weights(read_weights(path), emb.matrix), emb.encode)
