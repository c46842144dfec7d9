"""The router's handle on the difficulty model: nothing (not even numpy) is imported until a policy
uses `difficulty`, so gateways whose policies do not pay nothing, at start or per request."""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("hybridgw.policy")


class LazyDifficulty:
    """Loads the shipped model on `warm()` (at start, when the policy uses difficulty) or on the first
    request that needs it (after a reload that starts using it). A model that cannot load is logged
    once and scores None — rules then treat the request as not scored — rather than failing requests."""

    def __init__(self) -> None:
        self._score: Callable[[Mapping[str, Any]], float] | None = None
        self._failed = False

    def warm(self) -> None:
        if self._score is not None or self._failed:
            return
        try:
            from policies.quality.load import load_scorer  # numpy + wordllama: only for policies that use it

            self._score = load_scorer().score_body
        except (ImportError, OSError, ValueError, KeyError) as exc:
            self._failed = True
            log.error(json.dumps({"event": "policy.difficulty_unavailable", "error": str(exc)}))

    def __call__(self, body: Mapping[str, Any]) -> float | None:
        self.warm()
        return self._score(body) if self._score is not None else None
