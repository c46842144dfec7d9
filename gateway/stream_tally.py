"""What the gateway learns from a relayed stream without re-encoding it: the usage chunk (kept or
stripped as the client asked), the finish reason, and — only when the upstream sent no usage —
the completion text, counted at the end. Pure."""
from __future__ import annotations

from typing import Any

import orjson

_NULL_USAGE = (b',"usage":null', b', "usage": null')
_NULL_FINISH = (b'"finish_reason":null', b'"finish_reason": null')


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
        if b'"usage"' in payload:
            for null in _NULL_USAGE:
                if null in payload:
                    if not self.client_wants_usage:  # we asked for usage, not the client
                        payload = payload.replace(null, b"")
                    break
            else:
                return self._usage_chunk(payload)
        is_content = True
        if b'"finish_reason"' in payload and not any(n in payload for n in _NULL_FINISH):
            is_content = self._read_finish(payload)
        self.payloads.append(payload)
        return payload, is_content

    def _usage_chunk(self, payload: bytes) -> tuple[bytes | None, bool]:
        data = orjson.loads(payload)
        self._note_model(data)
        usage = data.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        choices = data.get("choices") or []
        if not choices:  # the usage-only chunk at the end
            return (payload if self.client_wants_usage else None), False
        if not self.client_wants_usage:
            data.pop("usage", None)
            payload = orjson.dumps(data)
        is_content = self._read_finish(payload)
        self.payloads.append(payload)
        return payload, is_content

    def _read_finish(self, payload: bytes) -> bool:
        """Note the finish reason; whether the chunk also carries output. A bare finish chunk
        (`"delta": {}`) is no token, so its arrival is no inter-token gap."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        self._note_model(data)
        choices = data.get("choices") or []
        for choice in choices:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self.finish_reason = str(choice["finish_reason"])
        return any(text for choice in choices for text in _choice_texts(choice))

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
            for choice in data.get("choices") or []:
                parts.extend(_choice_texts(choice))
        return "".join(parts)


def payload_text(payload: bytes) -> str:
    """The output text one streamed chunk carries ("" when it carries none or does not parse)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return ""
    return "".join(t for choice in data.get("choices") or [] for t in _choice_texts(choice))


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
            for call in part.get("tool_calls") or []:
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    texts.append(fn["arguments"])
    return texts


def response_text(data: dict[str, Any]) -> str:
    """The completion text of a non-streamed response, for counting."""
    return "".join(t for choice in data.get("choices") or [] for t in _choice_texts(choice))


def response_finish_reason(data: dict[str, Any]) -> str:
    for choice in data.get("choices") or []:
        if isinstance(choice, dict) and choice.get("finish_reason"):
            return str(choice["finish_reason"])
    return ""
