"""Requests our engine cannot serve: constrained output (response_format json_object/json_schema, vLLM's
guided_*, a tool call: tool_choice / function_call other than "none") and embeddings. Which field asks, which
backends cannot honour it (our engine), and passing those over in a decision. Pure. Our engine refuses constrained
output with a 400 that the gateway takes as "try the next target"; embeddings it does not serve at all."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.backend_kinds import GUIDED_FIELDS
from policies.lazy_text import later
from policies.schema import BackendSpec
from policies.strategies.base import Context, Outcome

_CALL_FIELDS = (("tool_choice", "tools"), ("function_call", "functions"))  # (what asks for a call, what offers one)
# An embeddings request (facts.embeddings, set by gateway/route_plan.py): our engine serves none, so it is passed
# over, and an alias with no other target refuses them with this.
EMBEDDINGS_UNSUPPORTED = "embeddings_unsupported"  # the refusal: a 400 (gateway/route_plan.py)


def asked_field(body: Mapping[str, Any]) -> str:
    """The field of the body that asks for constrained output, "" when none does (as the engine reads
    it: a response_format other than {"type": "text"}, any guided_* field that is set, or a tool call:
    tool_choice other than "none", or tools without a tool_choice, which means "auto"; so too
    function_call and functions)."""
    fmt = body.get("response_format")
    if fmt is not None and (fmt.get("type") if isinstance(fmt, Mapping) else fmt) != "text":
        return "response_format"
    for name in GUIDED_FIELDS:
        if body.get(name) is not None:
            return name
    for choice_field, offered_field in _CALL_FIELDS:
        choice = body.get(choice_field)
        if choice != "none" and (choice is not None or body.get(offered_field)):
            return choice_field
    return ""


def cannot_constrain(spec: BackendSpec) -> bool:
    """Our engine: a `kind: engine` backend, or one polled as ours (`state: hybridgw`: only our engine
    serves /v1/engine/state). A vLLM/SGLang server (`kind: openai`) does guided decoding: kept."""
    return not spec.kind_info.structured_output or spec.state_source == "hybridgw"


def pass_over(ctx: Context, outcome: Outcome) -> Outcome:
    """The outcome without the engines that cannot constrain output, when the request asks for it and
    another target is left; when none is, unchanged: the engine answers its 400 naming the field."""
    field = ctx.facts.structured_output
    if not field:  # nearly every request: nothing to look at
        return _embeddings(ctx, outcome) if ctx.facts.embeddings else outcome
    if not outcome.backends:
        return outcome
    specs = ctx.policy.policy.backends
    unable = [b for b in outcome.backends if b in specs and cannot_constrain(specs[b])]
    if not unable:
        return outcome
    names = ", ".join(unable)
    able = tuple(b for b in outcome.backends if b not in unable)
    if not able:
        reason = later(lambda: f"{outcome.reason}; {field} asks for structured output, which {names} cannot "
                               "constrain, and no other target serves it (refused there)")
        return Outcome(outcome.backends, reason, outcome.refusal, outcome.retry_after_s, outcome.slo_out,
                       outcome.predicted)
    reason = later(lambda: f"{outcome.reason}; {field} asks for structured output: passed over {names} "
                           "(cannot constrain its output)")
    return Outcome(able, reason, outcome.refusal, outcome.retry_after_s, outcome.slo_out, outcome.predicted)


def _embeddings(ctx: Context, outcome: Outcome) -> Outcome:
    """The outcome without our engines; refused (EMBEDDINGS_UNSUPPORTED) when nothing else is left to serve it."""
    specs = ctx.policy.policy.backends
    if not outcome.backends and any(b not in specs or not cannot_constrain(specs[b]) for b in ctx.usable):
        return outcome  # the strategy's own refusal (no capacity, …) with a target that serves embeddings
    unable = [b for b in (outcome.backends or sorted(ctx.usable)) if b in specs and cannot_constrain(specs[b])]
    if not unable:
        return outcome
    names = ", ".join(unable)
    able = tuple(b for b in outcome.backends if b not in unable)
    if not able:
        reason = later(lambda: f"{outcome.reason}; embeddings: {names} serves none, and no other target does")
        return Outcome((), reason, EMBEDDINGS_UNSUPPORTED)
    reason = later(lambda: f"{outcome.reason}; embeddings: passed over {names} (serves none)")
    return Outcome(able, reason, outcome.refusal, outcome.retry_after_s, outcome.slo_out, outcome.predicted)
