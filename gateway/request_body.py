"""Reading a request body at the edge: size limit first, then JSON decoding (orjson) and a nesting bound."""
from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from gateway.errors import BodyTooLarge, InvalidRequest

# orjson reads 1,024 levels but writes only 254 (the upstream call re-encodes the body), and the prompt
# counter recurses into message fields: a deeper body would be a 500. No real request nests past a few dozen.
MAX_JSON_DEPTH = 128


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")


_HEADER = object()  # read_body's default: the Content-Length as the request's headers give it


async def read_body(request: Request, limit: int, length: str | None | object = _HEADER) -> bytes:
    """The body, refused once it is over `limit` bytes (`length`: the Content-Length header, when the
    caller has read it already)."""
    if length is _HEADER:
        length = request.headers.get("content-length")
    if isinstance(length, str) and length.isdigit():
        if int(length) > limit:
            raise _too_large(limit)
        return await request.body()
    pieces: list[bytes] = []
    size = 0
    async for piece in request.stream():  # chunked upload: count as it arrives
        size += len(piece)
        if size > limit:
            raise _too_large(limit)
        pieces.append(piece)
    return b"".join(pieces)


async def read_json_body(request: Request, limit: int, length: str | None | object = _HEADER,
                         optional: bool = False) -> Any:
    """The body parsed as JSON; an empty one is a 400, or {} where the body is `optional`."""
    raw = await read_body(request, limit, length)
    if not raw.strip():
        if optional:
            return {}
        raise InvalidRequest("The request body is empty; expected a JSON object.")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _unreadable(request, exc) from None
    # Nesting past the bound takes that many brackets: most bodies are cleared by counting them (C speed).
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH and nesting_exceeds(value, MAX_JSON_DEPTH):
        raise InvalidRequest(f"The JSON body is nested more than {MAX_JSON_DEPTH} levels deep.",
                             code="invalid_json")
    return value


def _unreadable(request: Request, exc: orjson.JSONDecodeError) -> InvalidRequest:
    """The 400 for a body that is no JSON; a compressed one (read as it came: not decoded) is named as such,
    not left to read as text that is not UTF-8. Looked at only once parsing failed: no cost to a good body."""
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        return InvalidRequest(f"Content-Encoding {encoding!r} is not supported: send the JSON body uncompressed.",
                              code="unsupported_content_encoding")
    return InvalidRequest(f"We could not parse the JSON body of your request: {exc}", code="invalid_json")


def nesting_exceeds(value: Any, limit: int) -> bool:
    """Whether `value` holds more than `limit` nested arrays/objects (iterative: no recursion to run out of)."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, (dict, list)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False
