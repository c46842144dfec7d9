"""Token counts for the gateway: the prompt estimate before the call (large prompts counted in a worker
thread, with the prompt's difficulty/category scores, so the event loop keeps serving) and the completion
count when an upstream reports no usage. Delegates to `policies.tokens` (tiktoken, offline files)."""
from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from policies.compiled import CompiledPolicy
from policies.decider import Decider
from policies.facts import PromptScores, resolve_alias
from policies.tokens import TokenCounter, encoding_name_for

# Bodies above this are counted off the loop: tiktoken takes ~4 ms for 32 KiB (~0.5 s for 4 MiB),
# too long to stall every other request for; below it a thread hand-off costs more than it saves.
OFF_LOOP_BYTES = 32 * 1024


def count_off_loop(content_length: str | None) -> bool:
    """Whether a body of this Content-Length is counted in a worker thread (unknown length: yes)."""
    return content_length is None or not content_length.isdigit() or int(content_length) > OFF_LOOP_BYTES


async def measure_prompt(decider: Decider, compiled: CompiledPolicy, body: Mapping[str, Any], team: str,
                         *, off_loop: bool) -> tuple[int, PromptScores | None]:
    """The prompt's tokens with its alias's encoding (RoutingError for an unknown alias). When off_loop
    both the count and the prompt's scores (difficulty, category, where the policy uses them) are made
    in one worker thread (tiktoken releases the GIL while it encodes); on the loop the scores are left
    to build_facts (None)."""
    encoding = resolve_alias(compiled, str(body.get("model", "")), team).encoding
    if off_loop:
        return await asyncio.to_thread(_count_and_score, decider, compiled, body, encoding)
    return decider.count_prompt(body, encoding), None


def _count_and_score(decider: Decider, compiled: CompiledPolicy, body: Mapping[str, Any],
                     encoding: str) -> tuple[int, PromptScores]:
    return decider.count_prompt(body, encoding), decider.score(body, compiled)


class CompletionCounter:
    """A completion's tokens by the model alias it was asked of, for when the upstream reports no usage
    (shares the Decider's policies.tokens.TokenCounter: one set of loaded encodings)."""

    def __init__(self, counter: TokenCounter | None = None) -> None:
        self._counter = counter or TokenCounter()

    def load(self) -> None:
        """Load the encodings at app start instead of on the first request."""
        self._counter.warm()

    def count_text(self, text: str, model: str = "") -> int:
        return self._counter.count_text(text, encoding_name_for(model)) if text else 0
