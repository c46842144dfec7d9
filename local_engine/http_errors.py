"""One table from the engine's exceptions to OpenAI-shaped error bodies, statuses and headers."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from local_engine.chat_template import ChatTemplateError
from local_engine.errors import EngineDead, EngineFull, RequestTooLarge
from local_engine.protocol import ProtocolError


@dataclass(frozen=True)
class HttpError:
    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        # A message may echo the client's text (a model name), and JSON reads a lone surrogate ("\ud800")
        # that UTF-8 cannot write: written out as its escape, not a 500 from encoding the answer.
        message = self.message.encode("utf-8", "backslashreplace").decode("utf-8")
        return {"error": {"message": message, "type": self.type, "param": self.param, "code": self.code}}


class ModelNotFound(LookupError):
    def __init__(self, requested: str, served: tuple[str, ...]) -> None:
        super().__init__(f"The model `{requested}` does not exist; this engine serves {', '.join(served)}.")


def http_error(exc: BaseException) -> HttpError:
    """Map an exception to what the client sees; anything unexpected is a 500 without a traceback."""
    if isinstance(exc, ProtocolError):
        return HttpError(400, exc.message, "invalid_request_error", exc.param, exc.code)
    if isinstance(exc, RequestTooLarge):
        return HttpError(400, str(exc), "invalid_request_error", "messages", "context_length_exceeded")
    if isinstance(exc, ChatTemplateError):
        return HttpError(400, str(exc), "invalid_request_error", "messages", "invalid_value")
    if isinstance(exc, ModelNotFound):
        return HttpError(404, str(exc), "invalid_request_error", "model", "model_not_found")
    if isinstance(exc, EngineFull):
        return HttpError(503, str(exc), "server_error", None, "engine_full",
                         {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, EngineDead):
        return HttpError(503, str(exc), "server_error", None, "engine_unavailable")
    return HttpError(500, f"internal error: {type(exc).__name__}", "server_error", None, "internal_error")


def status_error(status: int, detail: str) -> HttpError:
    """Starlette's own refusals (no route 404, wrong method 405, a body it cannot read 400) in OpenAI's shape."""
    kind = "not_found_error" if status == 404 else "server_error" if status >= 500 else "invalid_request_error"
    return HttpError(status, detail, kind)


def _is_field(part: str) -> bool:
    """A field name or list index in pydantic's error location; not a union member's tag (`str`,
    `list[dict[str,any]]`, `function-after[...]`), where the user's path ends."""
    return part.replace("_", "").isalnum() and part not in ("str", "int", "float", "bool", "list", "dict", "none")


def validation_error(errors: list[dict[str, Any]]) -> HttpError:
    """A pydantic/FastAPI validation failure: 400 naming the first bad field (``messages.0.role``)."""
    first = errors[0] if errors else {}
    loc = list(itertools.takewhile(_is_field, (str(p) for p in first.get("loc", ()) if p != "body")))
    param = ".".join(loc) or None
    message = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        return HttpError(400, "the request body is not valid JSON", "invalid_request_error", None, "invalid_json")
    return HttpError(400, f"{param}: {message}" if param else message, "invalid_request_error", param,
                     "invalid_value")
