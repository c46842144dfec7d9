"""The error table: every exception maps to a status and an OpenAI-shaped body."""
from __future__ import annotations

import pytest

from gateway.errors import (
    AuthError,
    BodyTooLarge,
    InvalidRequest,
    ModelNotFound,
    NoBackendAvailable,
    UpstreamError,
    error_info,
    routing_refusal,
)
from observability.limits_protocol import LimitExceeded
from policies.errors import RoutingError


@pytest.mark.parametrize("exc, status, kind", [
    (InvalidRequest("bad", param="messages"), 400, "invalid_request_error"),
    (ModelNotFound("x"), 404, "invalid_request_error"),
    (BodyTooLarge("big"), 413, "invalid_request_error"),
    (AuthError("who"), 401, "authentication_error"),
    (NoBackendAvailable("none"), 503, "service_unavailable"),
    (LimitExceeded("tokens_per_minute", "over", 3.2), 429, "rate_limit_error"),
    (RuntimeError("secret internals"), 500, "internal_error"),
])
def test_table(exc: Exception, status: int, kind: str) -> None:
    info = error_info(exc)
    assert (info.status, info.type) == (status, kind)
    body = info.body()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "secret internals" not in str(body)


def test_param_and_code_survive() -> None:
    info = error_info(ModelNotFound("gpt-x"))
    assert info.param == "model" and info.code == "model_not_found" and "gpt-x" in info.message
    assert (info.status, info.type) == (404, "invalid_request_error")  # as OpenAI answers it


def test_limit_carries_retry_after() -> None:
    info = error_info(LimitExceeded("usd_per_day", "budget spent", 42.0))
    assert info.retry_after_s == 42.0 and info.code == "usd_per_day"


@pytest.mark.parametrize("upstream, kind, status", [
    (429, "status", 429), (500, "status", 502), (502, "status", 502), (503, "status", 503), (504, "status", 504),
    (400, "status", 400), (404, "status", 404), (401, "status", 502), (403, "status", 502),
    (None, "timeout", 504), (None, "connect", 502), (None, "protocol", 502),
])
def test_upstream_statuses(upstream: int | None, kind: str, status: int) -> None:
    exc = UpstreamError("upstream x said: nope", backend="x", upstream_status=upstream, kind=kind)
    info = error_info(exc)
    assert info.status == status
    assert info.message == "upstream x said: nope"  # the upstream's message reaches the client


@pytest.mark.parametrize("upstream, kind, retry", [
    (429, "status", True), (500, "status", True), (503, "status", True), (400, "status", False),
    (404, "status", False), (None, "timeout", True), (None, "connect", True),
])
def test_retryable(upstream: int | None, kind: str, retry: bool) -> None:
    assert UpstreamError("m", backend="b", upstream_status=upstream, kind=kind).retryable is retry


def test_an_alias_the_router_does_not_know_is_404_like_any_unknown_model() -> None:
    for code in ("model_not_found", "model_not_allowed"):  # (the latter: no hint that it exists)
        gone = error_info(routing_refusal(RoutingError(code, "Team 'red' may not use model 'x'", "model"), "x"))
        assert (gone.status, gone.code, gone.param) == (404, "model_not_found", "model")
        assert "red" not in gone.message and "`x`" in gone.message
    other = error_info(routing_refusal(RoutingError("too_odd", "no", "model"), "x"))
    assert (other.status, other.code) == (400, "too_odd")


def test_a_target_that_cannot_give_json_output_is_worth_passing_over() -> None:
    refused = UpstreamError("no json", backend="local", upstream_status=400, code="structured_output_unsupported")
    assert refused.retryable and error_info(refused).status == 400  # the client's 400 when no target is left
    assert not UpstreamError("no", backend="local", upstream_status=400, code="invalid_value").retryable
