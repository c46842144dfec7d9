"""What an upstream's answer came to, as one frozen UsageOutcome: its own token counts where they are sane,
else the gateway's count of the completion text; the finish reason and the model that answered. The same
rule for a non-streamed body and a relayed stream's tally."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.exchange import Exchange, UsageOutcome
from gateway.services import Services
from gateway.stream_tally import (
    StreamTally,
    response_finish_reason,
    response_text,
    upstream_counts,
    usage_is_insane,
)


def usage_outcome(usage: Any, needed: str, counted: Callable[[], int], finish_reason: str = "",
                  response_model: str = "") -> UsageOutcome:
    """Pure. `needed`: the count without which the upstream's usage is not taken (a stream's usage chunk
    must carry completion_tokens); `counted` (the gateway's count of the completion) is called only when
    the upstream reported none, or numbers that are no token counts (1e300, -5, "12")."""
    counts = upstream_counts(usage, needed)
    if counts is not None:
        return UsageOutcome(counts[0], counts[1], "upstream", finish_reason, response_model)
    return UsageOutcome(None, counted(), "counted", finish_reason, response_model)


def body_outcome(svc: Services, ex: Exchange, data: dict[str, Any]) -> UsageOutcome:
    """A non-streamed response's outcome, from its parsed body."""
    usage, model = data.get("usage"), data.get("model")
    return usage_outcome(usage, "prompt_tokens", _counter(svc, ex, usage, lambda: response_text(data)),
                         response_finish_reason(data), model if isinstance(model, str) else "")


def stream_outcome(svc: Services, ex: Exchange, tally: StreamTally) -> UsageOutcome:
    """A relayed stream's outcome, from what its tally saw (the text counted only when no usage came)."""
    return usage_outcome(tally.usage, "completion_tokens", _counter(svc, ex, tally.usage, tally.completion_text),
                         tally.finish_reason, tally.response_model)


def _counter(svc: Services, ex: Exchange, usage: Any, text: Callable[[], str]) -> Callable[[], int]:
    def counted() -> int:
        if usage_is_insane(usage):
            warn_bad_usage(svc, ex, usage)
        return svc.tokens.count_text(text(), ex.alias)

    return counted


def warn_bad_usage(svc: Services, ex: Exchange, usage: Any) -> None:
    """An upstream's usage numbers that are no sane counts are ignored (counted instead), and said."""
    backend = ex.target.backend if ex.target else ""
    svc.log.warning("request %s: upstream %s reported usage that is no sane token count (%.200r); "
                    "counted instead", ex.request_id, backend, usage)
