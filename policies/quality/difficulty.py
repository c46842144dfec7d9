"""The difficulty score: P(the weak, local model's answer is not good enough) from the prompt alone.

A logistic regression over the mean of a prompt's static token embeddings is linear in that mean, so
it folds into one number per token id (`token_scores`); a prompt's score is then a mean of cached
per-word sums — no vectors on the hot path. Pure: the tokenizer is passed in as a function.
"""
from __future__ import annotations

import math
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_CHARS = 16_000  # longer prompts are scored on their head: bounds the cost of a cold (uncached) prompt
MAX_WORDS_CACHED = 200_000  # ~30 MB at most; past it, new words are tokenized per request, not kept

Encode = Callable[[str], list[int]]  # one piece of text → its token ids (as "▁piece")
PUNCT = frozenset(string.punctuation + "“”‘’«»—–…")


@dataclass(frozen=True)
class DifficultyWeights:
    """The trained model: logit = mean(token_scores[ids]) + bias + length_weight · log1p(#ids)."""

    token_scores: np.ndarray  # (vocab,) float64: each token's embedding · the (standardised) weights
    bias: float
    length_weight: float
    name: str = "difficulty"  # what the weights were trained on, for explain output

    def logit(self, score_sum: float, num_tokens: int) -> float:
        mean = score_sum / num_tokens if num_tokens else 0.0
        return mean + self.bias + self.length_weight * math.log1p(num_tokens)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def prompt_text(body: Mapping[str, Any]) -> str:
    """The text a request is judged by: the last user message (a chat body) or the prompt (completions)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return " ".join(_content_text(m.get("content")) for m in messages if isinstance(m, Mapping))
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return " ".join(p for p in prompt if isinstance(p, str))
    return prompt if isinstance(prompt, str) else ""


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: only the text counts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


class WordTokens:
    """A word's token ids: leading and trailing punctuation are pieces of their own, so "dog," and
    "(dog)" reuse "dog" — fewer tokenizer calls for new surface forms (~9 µs each). Training uses this
    class too, so what is trained is what is served."""

    def __init__(self, encode: Encode) -> None:
        self._encode = encode
        self._pieces: dict[str, list[int]] = {}

    def ids(self, word: str) -> list[int]:
        start, end = 0, len(word)
        while start < end and word[start] in PUNCT:
            start += 1
        while end > start and word[end - 1] in PUNCT:
            end -= 1
        pieces = [*word[:start], word[start:end], *word[end:]] if start < end else list(word)
        return [i for piece in pieces for i in self._piece(piece)]

    def _piece(self, piece: str) -> list[int]:
        ids = self._pieces.get(piece)
        if ids is None:
            ids = self._encode(piece)
            if len(self._pieces) < MAX_WORDS_CACHED:
                self._pieces[piece] = ids
        return ids


class DifficultyScorer:
    """Scores prompts. Keeps a bounded word → (score sum, token count) cache: words repeat across
    prompts, so a warm 1,000-token prompt costs two C-level map-and-sum passes."""

    def __init__(self, weights: DifficultyWeights, encode: Encode) -> None:
        self.weights = weights
        self._tokens = WordTokens(encode)
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        self._table: list[float] = weights.token_scores.tolist()  # sums over a few ids: no numpy calls

    def score_body(self, body: Mapping[str, Any]) -> float:
        return self.score_text(prompt_text(body))

    def score_text(self, text: str) -> float:
        words = text[:MAX_CHARS].split()
        try:
            total, count = sum(map(self._sums.__getitem__, words)), sum(map(self._counts.__getitem__, words))
        except KeyError:
            total, count = self._cold(words)
        return sigmoid(self.weights.logit(total, count))

    def _cold(self, words: list[str]) -> tuple[float, int]:
        table, keep = self._table, len(self._sums) < MAX_WORDS_CACHED
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for word in dict.fromkeys(words):
            if word not in self._sums:
                ids = self._tokens.ids(word)
                sums[word], counts[word] = sum(table[i] for i in ids), len(ids)
        if keep:
            self._sums.update(sums)
            self._counts.update(counts)
        total = sum(self._sums[w] if w in self._sums else sums[w] for w in words)
        return total, sum(self._counts[w] if w in self._counts else counts[w] for w in words)
