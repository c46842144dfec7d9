"""The served answer of a sampled stream is read back from the bytes the client was sent."""
from __future__ import annotations

from gateway.shadow_tap import sse_text

STREAM = (b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n'
          b'data: {"choices":[{"index":0,"delta":{"content":"Par"},"finish_reason":null}]}\n\n'
          b'data: {"choices":[{"index":0,"delta":{"content":"is \\u00e9"},"finish_reason":null}]}\n\n'
          b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
          b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
          b"data: [DONE]\n\n")


def test_sse_text_joins_the_deltas() -> None:
    assert sse_text(STREAM) == "Paris \u00e9"
    assert sse_text(b"") == "" and sse_text(b"data: not json\n\n") == ""
