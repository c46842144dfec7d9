"""What one upstream read's SSE payloads hold for the relay: the stream's end ([DONE]), an error object in place
of a chunk, and empty frames (`data: {}`) that say nothing. Pure; runs once per relayed read."""
from __future__ import annotations

import orjson

from gateway.backends.base import Chunks
from gateway.sse import DONE_PAYLOAD


def error_object(payload: bytes) -> bool:
    """Whether a JSON payload is an error object (`{"error": …}`) instead of a chunk or a response."""
    if payload.find(b'"error"', 0, 64) < 0:  # cheap: chunks and responses start with "id"/"object"
        return False
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("error") is not None and not data.get("choices")


def sort_out(payloads: Chunks) -> tuple[Chunks, bytes | None]:
    """One read's payloads in one pass (it runs per relayed read): those to relay — up to the stream's end,
    empty frames dropped — and what ended the stream among them ([DONE] or an error object; None: nothing).
    The common read comes back as the same list."""
    if len(payloads) == 1 and not (first := payloads[0])[:64].partition(b'"error"')[1] \
            and first.partition(b"[{")[1]:
        # a paced stream's every read: one chunk with a choice, kept (as the loop below rules) in two calls
        # that take their argument the fast way on 3.11 (partition ~0.3 k instructions; find with bounds parses
        # them by format string, ~1.5 k) and allocate nothing where nothing matches
        return payloads, None
    kept: Chunks | None = None
    for i, payload in enumerate(payloads):
        if payload == DONE_PAYLOAD or (payload.find(b'"error"', 0, 64) >= 0 and error_object(payload)):
            return (payloads[:i] if kept is None else kept), payload
        # find, not `in`: `bytes in bytes` costs 3.11 a raised and cleared TypeError (gateway/stream_tally.py)
        if payload.find(b"[{") < 0 and payload.find(b'"usage":{') < 0 and empty_frame(payload):
            if kept is None:
                kept = payloads[:i]
        elif kept is not None:
            kept.append(payload)
    return (payloads if kept is None else kept), None


def empty_frame(payload: bytes) -> bool:
    """A chunk that says nothing: a JSON object without choices, usage or error (`data: {}`, a keep-alive some
    servers send). OpenAI never sends one and clients expect none, so it is dropped, and a stream of nothing
    else is no answer (502, as gateway/backends/answer_shape.py rules for a non-streamed `{}`). Any chunk
    with a choice holds `[{`, the usage chunk `"usage":{`: only the rest is parsed."""
    if payload.find(b"[{") >= 0 or payload.find(b'"usage":{') >= 0:
        return False
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and not data.get("choices") and data.get("usage") is None \
        and data.get("error") is None
