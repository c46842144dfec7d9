"""Semantic routes: a request's category is the policy's category whose example prompts' centroid is
nearest (cosine) to the prompt's mean token embedding. The prompt's norm does not change which
centroid is nearest, so the comparison is linear and folds into one K-vector per token id, as the
difficulty score does. Pure: the embedding matrix and the tokenizer are passed in."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import chain

import numpy as np

from policies.quality.difficulty import MAX_CHARS, MAX_WORDS_CACHED, WordTokens


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


class CategoryIndex:
    """Built once per policy (at its first use); `nearest` costs a gather of #tokens × K floats."""

    def __init__(self, categories: Mapping[str, Sequence[str]], matrix: np.ndarray, tokens: WordTokens) -> None:
        self.names = tuple(categories)
        self._tokens = tokens
        self._ids: dict[str, list[int]] = {}
        centroids = np.stack([_unit(np.stack([self._mean(text, matrix) for text in examples])).mean(axis=0)
                              for examples in categories.values()])  # (K, 256)
        self._table = (matrix @ _unit(centroids).T).astype(np.float32)  # (vocab, K)

    def _word_ids(self, words: list[str]) -> list[int]:
        try:
            return list(chain.from_iterable(map(self._ids.__getitem__, words)))
        except KeyError:
            keep = len(self._ids) < MAX_WORDS_CACHED
            out: list[int] = []
            for word in words:
                ids = self._ids.get(word)
                if ids is None:
                    ids = self._tokens.ids(word)
                    if keep:
                        self._ids[word] = ids
                out.extend(ids)
            return out

    def _mean(self, text: str, matrix: np.ndarray) -> np.ndarray:
        ids = self._word_ids(text[:MAX_CHARS].split())
        return matrix[ids].mean(axis=0) if ids else np.zeros(matrix.shape[1], dtype=matrix.dtype)

    def scores(self, text: str) -> np.ndarray:
        """(K,) the prompt's mean embedding · each unit centroid (ranks like cosine similarity)."""
        ids = self._word_ids(text[:MAX_CHARS].split())
        return self._table[ids].sum(axis=0) / len(ids) if ids else np.zeros(len(self.names), dtype=np.float32)

    def nearest(self, text: str) -> str | None:
        """The nearest category; None for a prompt without words."""
        if not text.split():
            return None
        return self.names[int(np.argmax(self.scores(text)))]
