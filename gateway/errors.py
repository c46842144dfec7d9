"""The gateway's exceptions and the one table that maps them to an HTTP status and OpenAI-shaped JSON.

Pure: no I/O. `error_payload` is what every error response body is built from.
"""
from __future__ import annotations

from dataclasses import dataclass

from observability.limits_protocol import LimitExceeded
from policies.errors import RoutingError


class GatewayError(Exception):
    """Base of the errors the gateway raises on purpose; `param` names the offending field."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after_s = retry_after_s  # set: the response carries Retry-After


class InvalidRequest(GatewayError):
    """The body is not a valid request: malformed JSON, wrong types, missing or absurd fields."""


class ModelNotFound(InvalidRequest):
    """404 as OpenAI answers it (the SDK raises NotFoundError), also for a model the team may not use."""

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist or you do not have access to it.",
                         param="model", code="model_not_found")


class BodyTooLarge(GatewayError):
    pass


class AuthError(GatewayError):
    pass


class PermissionDenied(GatewayError):
    pass


class NotFound(GatewayError):
    pass


class NoBackendAvailable(GatewayError):
    """Every target of the route decision is absent from this gateway's configuration."""


class ServiceUnavailable(GatewayError):
    """A store the gateway needs to answer (e.g. the key store) cannot be reached."""


class BudgetExhausted(GatewayError):
    """A stream's output reached what the team's hard USD budget still pays for; it is cut there."""


# An upstream's refusal of what this request needs from it in particular — a context too short, no
# structured output (our engine, for response_format json) — where another target may well serve it:
# worth trying the next, and no sign the upstream is unhealthy.
ANOTHER_TARGET_MAY = frozenset({"context_length_exceeded", "structured_output_unsupported"})


class UpstreamError(GatewayError):
    """An upstream answered with an error, timed out, or dropped the connection."""

    def __init__(self, message: str, *, backend: str, upstream_status: int | None = None,
                 kind: str = "status", param: str | None = None, code: str | None = None,
                 after_first_byte: bool = False) -> None:
        super().__init__(message, param=param, code=code)
        self.backend = backend
        self.upstream_status = upstream_status  # None: no HTTP status (timeout, connection error)
        self.kind = kind  # "status", "timeout", "connect", "protocol"
        self.after_first_byte = after_first_byte

    @property
    def retryable(self) -> bool:
        """Worth trying the next target: the upstream is overloaded, broken or unreachable — or it
        cannot serve this request where another may (ANOTHER_TARGET_MAY)."""
        if self.upstream_status is None or self.code in ANOTHER_TARGET_MAY:
            return True
        return self.upstream_status in (408, 429) or self.upstream_status >= 500


def routing_refusal(exc: RoutingError, alias: str) -> InvalidRequest:
    """The client's error for a request the policy cannot route at all: an alias gone, or no longer the
    team's, since the catalog's check is a 404 like any unknown model (and, like it, does not say which)."""
    if exc.code in ("model_not_found", "model_not_allowed"):
        return ModelNotFound(alias)
    return InvalidRequest(exc.message, param=exc.param, code=exc.code)


def against_health(error: BaseException) -> bool:
    """Whether a failed call says its backend is unhealthy: an overload, a fault or no answer — not a
    4xx the request earned, nor a refusal another target may not give (ANOTHER_TARGET_MAY)."""
    return isinstance(error, UpstreamError) and error.retryable and error.code not in ANOTHER_TARGET_MAY


_MIN_SECRET_CHARS = 8


def redacted(error: UpstreamError, secret: str | None) -> UpstreamError:
    """`error` without `secret` (the backend's key) in its message: an upstream may echo the credentials
    it refused, and the message goes on to the client, the usage record and /readyz. A key too short to be a
    secret ("k", as tests use) is left alone: replacing it would garble every word that holds the letter."""
    if secret and len(secret) >= _MIN_SECRET_CHARS and secret in error.message:
        error.message = error.message.replace(secret, "[redacted]")
        error.args = (error.message,)
    return error


@dataclass(frozen=True)
class ErrorInfo:
    status: int
    type: str
    message: str
    param: str | None
    code: str | None
    retry_after_s: float | None = None

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


# exception class → (HTTP status, OpenAI error type); the first matching class in MRO order wins.
ERROR_TABLE: dict[type[BaseException], tuple[int, str]] = {
    ModelNotFound: (404, "invalid_request_error"),  # OpenAI's status and type for it
    InvalidRequest: (400, "invalid_request_error"),
    BodyTooLarge: (413, "invalid_request_error"),
    AuthError: (401, "authentication_error"),
    PermissionDenied: (403, "permission_error"),
    NotFound: (404, "not_found_error"),
    NoBackendAvailable: (503, "service_unavailable"),
    ServiceUnavailable: (503, "service_unavailable"),
    LimitExceeded: (429, "rate_limit_error"),
    BudgetExhausted: (429, "rate_limit_error"),
}


def upstream_status_map(error: UpstreamError) -> tuple[int, str]:
    """The status and type the client sees for an upstream failure."""
    status = error.upstream_status
    if status is None:
        return (504, "timeout") if error.kind == "timeout" else (502, "upstream_error")
    if status == 429:
        return 429, "rate_limit_error"
    if status in (401, 403):
        # The upstream refused *our* credentials; the client's key is fine.
        return 502, "upstream_error"
    if status in (503, 504):
        return status, "upstream_error"
    if status >= 500:
        return 502, "upstream_error"
    return status, "invalid_request_error"


def error_info(exc: BaseException) -> ErrorInfo:
    """Map any exception to what the client sees; unknown ones become a 500 without internals."""
    if isinstance(exc, UpstreamError):
        status, kind = upstream_status_map(exc)
        return ErrorInfo(status, kind, exc.message, exc.param, exc.code or _upstream_code(exc))
    if isinstance(exc, LimitExceeded):
        return ErrorInfo(429, "rate_limit_error", exc.message, None, exc.limit, exc.retry_after_s)
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            status, kind = ERROR_TABLE[cls]
            assert isinstance(exc, GatewayError)
            return ErrorInfo(status, kind, exc.message, exc.param, exc.code, exc.retry_after_s)
    return ErrorInfo(500, "internal_error", "The gateway hit an internal error.", None, None)


def _upstream_code(exc: UpstreamError) -> str:
    if exc.upstream_status is None:
        return f"upstream_{exc.kind}"
    return f"upstream_{exc.upstream_status}"
