"""What the gateway learns from a relayed stream without re-encoding it: the usage chunk (kept or
stripped as the client asked), the finish reason, and — only when the upstream sent no usage —
the completion text, counted at the end; and the output cap of a hard USD budget. Pure."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

_NULL_USAGE = (b',"usage":null', b', "usage": null')
_NULL_USAGE_LAST = b',"usage":null}'  # the usual place: usage is the chunk's last field
_NULL_USAGE_CUT = len(_NULL_USAGE_LAST)
_NULL_FINISH = (b'"finish_reason":null', b'"finish_reason": null')
# A chat chunk of one choice, without finish, usage asked for: OpenAI's, vLLM's and our engine's text chunk.
_OPEN_CHAT_TAIL = b'"finish_reason":null}],"usage":null}'
_CONTENT_KEY = b'"content":"'
_QUOTE = 34  # b'"'[0]: the content key followed by it is `"content":""`, no text
_OUTPUT_KEYS = ("content", "tool_calls", "refusal", "reasoning_content", "reasoning")  # delta fields that are output


class StreamTally:
    __slots__ = ("client_wants_usage", "finish_reason", "payloads", "response_model", "usage")

    def __init__(self, client_wants_usage: bool) -> None:
        self.client_wants_usage = client_wants_usage
        self.usage: dict[str, Any] | None = None
        self.finish_reason = ""
        self.response_model = ""  # the model the upstream names in its chunks (from the parsed ones)
        self.payloads: list[bytes] = []  # kept (as references) for counting when usage never comes

    def accept(self, payload: bytes) -> tuple[bytes | None, bool]:
        """(bytes to relay or None to drop, whether this is a content chunk for timing)."""
        if payload.endswith(_NULL_USAGE_LAST):  # OpenAI's chunk when usage was asked for: known without a scan
            if not self.client_wants_usage:
                payload = payload[:-_NULL_USAGE_CUT] + b"}"
        elif payload.find(b'"usage"') >= 0:
            for null in _NULL_USAGE:
                if payload.find(null) >= 0:
                    if not self.client_wants_usage:  # we asked for usage, not the client
                        payload = payload.replace(null, b"")
                    break
            else:
                return self._usage_chunk(payload)
        # The common chunk (some text, no finish) is known without parsing it; the rest is parsed.
        if _plain_text_chunk(payload):
            is_content = True
        else:
            is_content = self._read(payload)
        self.payloads.append(payload)
        return payload, is_content

    def frame(self, payload: bytes) -> tuple[bytes | None, bool]:
        """`accept`, with the bytes to relay framed as one SSE event (`data: …` + a blank line). The common
        chunk (text, no finish, `"usage":null` last) is known by one `endswith` and one `find`: each bytes
        method call costs 3.11 ~1-1.7 k instructions (callgrind, docs/benchmarks.md "the relay, per frame")."""
        if payload.endswith(_OPEN_CHAT_TAIL):
            at = payload.find(_CONTENT_KEY)
            if at >= 0 and payload[at + 11] != _QUOTE:
                self.payloads.append(payload)  # as it came: counting reads its text, `"usage":null` or not
                if self.client_wants_usage:
                    return b"data: " + payload + b"\n\n", True
                return b"data: " + payload[:-_NULL_USAGE_CUT] + b"}\n\n", True
        out, is_content = self.accept(payload)
        return (None if out is None else b"data: " + out + b"\n\n"), is_content

    def _usage_chunk(self, payload: bytes) -> tuple[bytes | None, bool]:
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):  # not an OpenAI chunk: relayed as it came, no usage, no token
            self.payloads.append(payload)
            return payload, False
        self._note_model(data)
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = choices_of(data)
        if not choices:  # the usage-only chunk at the end
            return (payload if self.client_wants_usage else None), False
        if not self.client_wants_usage:
            data.pop("usage", None)
            payload = orjson.dumps(data)
        is_content = self._read(payload)
        self.payloads.append(payload)
        return payload, is_content

    def _read(self, payload: bytes) -> bool:
        """Note the model and finish reason; whether the chunk carries output. OpenAI's role-only
        first chunk (`"content": ""`) and a bare finish chunk (`"delta": {}`) are no token, so their
        arrival is neither the first token nor an inter-token gap."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(data, dict):
            return False
        self._note_model(data)
        choices = choices_of(data)
        for choice in choices:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return any(carries_content(choice) for choice in choices)

    def _note_model(self, data: Any) -> None:
        model = data.get("model") if isinstance(data, dict) else None
        if isinstance(model, str) and model:
            self.response_model = model

    def completion_text(self) -> str:
        """The streamed text (chat deltas, completion text, tool-call arguments), for counting."""
        parts: list[str] = []
        for payload in self.payloads:
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(data, dict):
                continue
            for choice in choices_of(data):
                parts.extend(_choice_texts(choice))
        return "".join(parts)


def payload_text(payload: bytes) -> str:
    """The output text one streamed chunk carries ("" when it carries none or does not parse)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(data, dict):
        return ""
    return "".join(t for choice in choices_of(data) for t in _choice_texts(choice))


def _plain_text_chunk(payload: bytes) -> bool:
    """A chat chunk with non-empty content and no finish reason (an escaped quote inside the text
    cannot look like `"content":""`: it would read `\\"`). `find`, not `in`: this runs per chunk, and on
    3.11 `bytes in bytes` first tries the operand as an int, raising and clearing a TypeError (~1.8 k
    instructions each, callgrind: docs/benchmarks.md "round 6")."""
    find = payload.find
    if find(b'"finish_reason":null') >= 0:
        return find(b'"content":"') >= 0 and find(b'"content":""') < 0
    if find(b'"finish_reason": null') >= 0:
        return find(b'"content": "') >= 0 and find(b'"content": ""') < 0
    return False


def carries_content(choice: Any) -> bool:
    """Whether one streamed choice carries output: text, a tool-call delta, a refusal or reasoning."""
    if not isinstance(choice, dict):
        return False
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        return False
    return any(delta.get(key) for key in _OUTPUT_KEYS)


def _choice_texts(choice: Any) -> list[str]:
    if not isinstance(choice, dict):
        return []
    texts = []
    if isinstance(choice.get("text"), str):
        texts.append(choice["text"])
    for key in ("delta", "message"):
        part = choice.get(key)
        if isinstance(part, dict):
            if isinstance(part.get("content"), str):
                texts.append(part["content"])
            calls = part.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    texts.append(fn["arguments"])
    return texts


def choices_of(data: dict[str, Any]) -> list[Any]:
    """An answer's choices; a broken upstream's `"choices": 5` (or any non-list) has none, and no crash."""
    choices = data.get("choices")
    return choices if isinstance(choices, list) else []


def response_text(data: dict[str, Any]) -> str:
    """The completion text of a non-streamed response, for counting."""
    return "".join(t for choice in choices_of(data) for t in _choice_texts(choice))


def response_finish_reason(data: dict[str, Any]) -> str:
    for choice in choices_of(data):
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return str(choice["finish_reason"])
    return ""


MAX_SANE_TOKENS = 2**40  # beyond any context window: a number past it is a broken or hostile upstream


def sane_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SANE_TOKENS


def upstream_counts(usage: Any, needed: str) -> tuple[int, int] | None:
    """(prompt, completion) tokens as the upstream reported them, or None when it reported no
    `needed` count or any count that is not a sane integer (then the gateway counts instead).
    An absent other count reads 0 (embeddings report no completion_tokens)."""
    if not isinstance(usage, dict) or usage.get(needed) is None:
        return None
    prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
    prompt = 0 if prompt is None else prompt
    completion = 0 if completion is None else completion
    if not (sane_count(prompt) and sane_count(completion)):
        return None
    return prompt, completion


def usage_is_insane(usage: Any) -> bool:
    """The upstream sent usage numbers, and at least one is not a sane count (for a warning)."""
    if not isinstance(usage, dict):
        return False
    return any(usage.get(k) is not None and not sane_count(usage.get(k))
               for k in ("prompt_tokens", "completion_tokens", "total_tokens"))


class OutputCap:
    """The output tokens a hard USD budget still pays for, charged chunk by chunk (one relay owns it).
    Chunks are counted (one by one) only once their bytes could reach the cap: a token is ≥ 1 byte of
    text and JSON never shortens text, so far from it a chunk costs an addition, and the chunk that
    crosses it is still the one found."""

    __slots__ = ("counted", "limit", "uncounted", "uncounted_bytes")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counted = 0
        self.uncounted: list[bytes] = []
        self.uncounted_bytes = 0

    def crossed(self, payload: bytes, count: Callable[[bytes], int]) -> bool:
        """Charge one content chunk (`count`: its output tokens); whether the output is now past the cap."""
        self.uncounted.append(payload)
        self.uncounted_bytes += len(payload)
        if self.counted + self.uncounted_bytes <= self.limit:
            return False  # the earlier chunks stayed under too, so only this one can be the one that crosses
        for chunk in self.uncounted:
            self.counted += count(chunk)
        self.uncounted.clear()
        self.uncounted_bytes = 0
        return self.counted > self.limit
