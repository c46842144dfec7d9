"""Token counts for the gateway: the estimate before the call (prompt) and the completion count
when an upstream reports no usage. Delegates to `policies.tokens` (tiktoken, offline files)."""
from __future__ import annotations

from typing import Any

from policies.tokens import TokenCounter as _Counter
from policies.tokens import encoding_name_for


class TokenCounter:
    def __init__(self, counter: _Counter | None = None) -> None:
        self._counter = counter or _Counter()  # share the router's: one set of loaded encodings

    def load(self) -> None:
        """Load the encodings at app start instead of on the first request."""
        self._counter.warm()

    def count_prompt(self, body: dict[str, Any], model: str) -> int:
        """Chat (messages + tools), completions (prompt) or embeddings (input) bodies."""
        encoding = encoding_name_for(model)
        if "messages" in body or "prompt" in body:
            return self._counter.count_prompt(body, encoding)
        return self._counter.count_prompt({"prompt": body.get("input", "")}, encoding)

    def count_text(self, text: str, model: str = "") -> int:
        return self._counter.count_text(text, encoding_name_for(model)) if text else 0
