"""The router's handle on the prompt models (difficulty score, semantic categories): nothing (not even
numpy) is imported until a policy uses `difficulty` or `category`, so gateways whose policies do not
pay nothing, at start or per request."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from policies.quality.categories import CategoryIndex
    from policies.quality.load import Embeddings

log = logging.getLogger("hybridgw.policy")
MAX_INDEXES = 4  # category sets kept (a reload builds a new one; the old policy may still be in flight)


class LazyQuality:
    """Loads the shipped model on `warm()` (at start, when the policy uses it) or on the first request
    that needs it (after a reload that starts using it). A model that cannot load is logged once and
    answers None — rules then see the request as not scored — rather than failing requests."""

    def __init__(self) -> None:
        self._score: Callable[[Mapping[str, Any]], float] | None = None
        self._weights: Path | None = None  # None: the shipped weights
        self._scorers: dict[Path | None, Callable[[Mapping[str, Any]], float]] = {}
        self._embeddings: Embeddings | None = None
        self._indexes: dict[tuple[tuple[str, tuple[str, ...]], ...], CategoryIndex] = {}
        self._failed = False

    def use(self, weights: Path | None) -> None:
        """Score with this weights file from now on (None: the shipped one), loaded by the next warm()."""
        if weights != self._weights:
            self._weights, self._failed = weights, False
            self._score = self._scorers.get(weights)

    def warm(self, categories: Mapping[str, Sequence[str]] | None = None) -> None:
        """Load the model, and build the index of `categories` when given (off the request path)."""
        if categories and self._score is not None:
            self.category({}, categories)
        if self._score is not None or self._failed:
            return
        try:
            # numpy + wordllama: imported only when a policy uses them
            from policies.quality.load import WEIGHTS_FILE, load_embeddings, load_scorer

            if self._embeddings is None:
                self._embeddings = load_embeddings()
            scorer = load_scorer(self._weights or WEIGHTS_FILE, embeddings=self._embeddings)
            self._score = self._scorers[self._weights] = scorer.score_body
        except (ImportError, OSError, ValueError, KeyError) as exc:
            self._failed = True
            log.error(json.dumps({"event": "policy.difficulty_unavailable", "error": str(exc),
                                  "weights": str(self._weights or "shipped")}))
            return
        if categories:
            self.category({}, categories)

    def __call__(self, body: Mapping[str, Any]) -> float | None:
        """The difficulty score of a request body."""
        self.warm()
        return self._score(body) if self._score is not None else None

    def category(self, body: Mapping[str, Any], categories: Mapping[str, Sequence[str]]) -> str | None:
        """The nearest of `categories` (name → example prompts) to the request's prompt."""
        self.warm()
        if self._embeddings is None or not categories:
            return None
        from policies.quality.categories import CategoryIndex
        from policies.quality.difficulty import WordTokens, prompt_text

        key = tuple((name, tuple(examples)) for name, examples in categories.items())
        index = self._indexes.get(key)
        if index is None:
            if len(self._indexes) >= MAX_INDEXES:
                self._indexes.clear()
            emb = self._embeddings
            index = self._indexes[key] = CategoryIndex(categories, emb.matrix, WordTokens(emb.encode))
        return index.nearest(prompt_text(body))
