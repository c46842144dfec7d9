"""Whether an upstream's 200 body is an answer at all: a chat or text completion carries a `choices`
list of objects, an embeddings answer a `data` list. Pure; a body that fails is an upstream failure
(502), never relayed as a success."""
from __future__ import annotations

from typing import Any

_LISTS = {"chat/completions": ("choices", "chat completion"), "completions": ("choices", "completion"),
          "embeddings": ("data", "embeddings list")}


def shape_problem(path: str, data: Any) -> str | None:
    """Why `data` (the parsed body) is not an answer to a call on `path`; None when it is one. Only the
    frame is checked: what is inside each choice is read leniently further on."""
    field, what = _LISTS.get(path, ("choices", "completion"))
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not a {what} object"
    items = data.get(field)
    if not isinstance(items, list) or not items:
        return f"a {what} needs a non-empty `{field}` list"
    if not all(isinstance(item, dict) for item in items):
        return f"every entry of `{field}` must be an object"
    return None
