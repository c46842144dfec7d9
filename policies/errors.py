"""The policy package's own exceptions: a bad policy file, and requests the policy cannot place."""
from __future__ import annotations


class PolicyError(Exception):
    """A policy file that cannot be used; the message names file:line, the field and what is allowed."""

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or (message,)


class RoutingError(Exception):
    """A request the policy cannot route at all (the gateway maps `code` to an OpenAI-shaped 4xx)."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code = code  # "model_not_found" | "model_not_allowed"
        self.message = message
        self.param = param
