"""Request bodies at the HTTP edge (pydantic, strict types, unknown fields kept for pass-through).

The gateway forwards the client's own dict, not a re-dump of these models: they only check it.
"""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import InvalidRequest

MAX_TOKENS_LIMIT = 1 << 20  # anything above is absurd for any model served today

TokenList = list[int]


class RequestBody(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(RequestBody):
    include_usage: bool | None = None


class ChatMessage(RequestBody):
    role: str = Field(min_length=1)
    content: str | list[dict[str, Any]] | None = None


class _Generation(RequestBody):
    model: str = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    n: int | None = Field(None, ge=1, le=128)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None

    def conflict(self) -> tuple[str, str] | None:
        """(message, param) when fields are each valid but not together, as OpenAI and vLLM refuse them."""
        if self.stream_options is not None and not self.stream:
            return "The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options"
        return None


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    def output_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def conflict(self) -> tuple[str, str] | None:
        if self.top_logprobs is not None and not self.logprobs:
            return "'top_logprobs' is only allowed when 'logprobs' is true.", "top_logprobs"
        return super().conflict()


class CompletionRequest(_Generation):
    prompt: str | list[str] | TokenList | list[TokenList]
    logprobs: int | None = Field(None, ge=0, le=5)

    def output_limit(self) -> int | None:
        return self.max_tokens


class EmbeddingRequest(RequestBody):
    model: str = Field(min_length=1)
    input: str | list[str] | TokenList | list[TokenList]
    encoding_format: str | None = None
    dimensions: int | None = Field(None, ge=1)

    def output_limit(self) -> int | None:
        return 0

    def conflict(self) -> tuple[str, str] | None:
        """OpenAI refuses an empty input, or one with an empty item, with a 400 (passed on, an upstream
        answered it with no vectors: a 502 to the client)."""
        items = [self.input] if isinstance(self.input, str) else self.input
        if not items or any(isinstance(item, (str, list)) and not item for item in items):
            return "Invalid 'input': it must not be empty, nor hold an empty string or token list.", "input"
        return None


M = TypeVar("M", bound=BaseModel)

_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as the field path a user wrote, e.g. `messages[0].content`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.split("[")[0] in _TYPE_TAGS or not part.replace("_", "").isalnum():
            break  # a union member's tag, not a field
        else:
            out += f".{part}" if out else part
    return out


def _message(kind: str, param: str, detail: str) -> str:
    if kind == "missing":
        return f"Missing required parameter: '{param}'."
    if kind == "too_short":
        return f"Invalid '{param}': empty array. Expected an array with minimum length 1."
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than", "string_too_short"):
        return f"Invalid value for '{param}': {detail}."
    if kind == "value_error":  # a validator's own words (e.g. a duration), without pydantic's prefix
        return f"Invalid value for '{param}': {detail.removeprefix('Value error, ').rstrip('.')}."
    return f"Invalid type for '{param}': {detail}."


def parse_body(model: type[M], body: Any) -> M:
    """Validate a decoded JSON body or raise InvalidRequest naming the first offending field."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    try:
        parsed = model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = _param(tuple(first["loc"]))
        raise InvalidRequest(_message(first["type"], param, first["msg"]), param=param or None,
                             code="invalid_value" if first["type"] != "missing" else "missing_required_parameter"
                             ) from None
    conflict = getattr(parsed, "conflict", None)
    if conflict is not None and (found := conflict()) is not None:
        raise InvalidRequest(found[0], param=found[1], code="invalid_value")
    return parsed
