"""Build the frozen RequestFacts for one request from its body, its team and the live state (pure:
the token counter, calibration and clocks are passed in)."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from policies.calibration import Calibration
from policies.compiled import AliasInfo, CompiledPolicy, calibration_key  # noqa: F401 (its home was here)
from policies.decision import RequestFacts
from policies.errors import RoutingError
from policies.estimator import TokenPrice, local_price
from policies.live import LiveState
from policies.schema import BackendSpec
from policies.structured_output import asked_field
from policies.tokens import TokenCounter


def resolve_alias(compiled: CompiledPolicy, model: str, team: str) -> AliasInfo:
    alias = compiled.aliases.get(model)
    if alias is None:
        raise RoutingError("model_not_found", f"The model {model!r} does not exist", "model")
    if alias.teams is not None and team not in alias.teams:
        raise RoutingError("model_not_allowed", f"Team {team!r} may not use model {model!r}", "model")
    return alias


Difficulty = Callable[[Mapping[str, Any]], float | None]
Category = Callable[[Mapping[str, Any], Mapping[str, list[str]]], str | None]


@dataclass(frozen=True)
class PromptScores:
    """What the prompt models said of one request (None: the policy does not use it, or no model)."""

    difficulty: float | None = None
    category: str | None = None


_UNSCORED = PromptScores()  # immutable: shared by every request whose policy scores nothing


def score_prompt(compiled: CompiledPolicy, body: Mapping[str, Any], difficulty: Difficulty | None,
                 category: Category | None) -> PromptScores:
    """The prompt's difficulty and category, each only when a rule of the policy uses it."""
    if not (compiled.uses_difficulty or compiled.uses_category):
        return _UNSCORED  # the common case: nothing to score, nothing to build
    return PromptScores(
        difficulty(body) if difficulty is not None and compiled.uses_difficulty else None,
        category(body, compiled.policy.categories) if category is not None and compiled.uses_category else None)


def _positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _choices(body: Mapping[str, Any]) -> int:
    """The request's `n` (1 when absent or not a positive integer)."""
    n = body.get("n")
    return 1 if n is None else _positive_int(n) or 1


def expected_output(compiled: CompiledPolicy, body: Mapping[str, Any], team: str,
                    team_p90: int | None) -> tuple[int, str]:
    """max_tokens (× n choices), else the team's recent p90, else the team's or policy's default."""
    n = _choices(body)
    get = body.get
    asked = get("max_completion_tokens")
    asked = _positive_int(asked) if asked is not None else None
    if asked is None:
        asked = get("max_tokens")
        asked = _positive_int(asked) if asked is not None else None
    if asked is not None:
        return asked * n, "max_tokens"
    if team_p90:
        return team_p90 * n, "team_p90"
    default = compiled.team(team).default_output_tokens
    if default is not None:
        return default * n, "team_default"
    return compiled.policy.defaults.output_tokens * n, "default"


def backend_output(spec: BackendSpec, body: Mapping[str, Any], output: int, source: str) -> int:
    """The most one backend may produce for this request: what the client asked, else the
    max_tokens the gateway sends it when the client sets none (its default cap), else the expectation."""
    cap = spec.max_tokens_default
    if source == "max_tokens" or cap is None:
        return output
    return cap * _choices(body)


def _request_tags(compiled: CompiledPolicy, team: str, body: Mapping[str, Any]) -> dict[str, str]:
    metadata = body.get("metadata")
    own = compiled.team(team).tags
    if metadata is None:  # most requests: the team's tags alone (a copy: facts never share a dict)
        return dict(own) if own else {}
    tags = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, Mapping) else {}
    tags.update(own)  # the policy's tags of a team are not the client's to change
    return tags


# The facts that differ by deployment, each keyed by backend: prompt tokens (calibrated), KV bytes, KV blocks,
# cost, prefix-cache hit rate, most output tokens (a plain tuple: a NamedTuple cost build_facts ~8%).
_PerBackend = tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, float], dict[str, float], dict[str, int]]


def _per_backend(compiled: CompiledPolicy, alias: AliasInfo, live: LiveState, calibration: Calibration,
                 prompt: int, output: int, capped: int | None) -> _PerBackend:
    """Each deployment's calibrated prompt, most output, KV bytes and blocks (engines) and cost.
    `capped`: the request's n where a backend's default max_tokens caps its output (None: max_tokens set)."""
    per_backend: dict[str, int] = {}
    kv: dict[str, int] = {}
    blocks: dict[str, int] = {}
    costs: dict[str, float] = {}
    prefix: dict[str, float] = {}
    outputs: dict[str, int] = {}
    for dep in compiled.deployments[alias.name]:
        backend, cap = dep.backend, dep.max_tokens_default
        tokens = per_backend[backend] = calibration.apply(dep.calibration_key, prompt)
        # KV is held for the most the backend may produce (backend_output); cost expects no more than that.
        most = outputs[backend] = output if capped is None or cap is None else cap * capped
        price: TokenPrice | None
        if dep.engine:
            snap = live.engine(backend)
            if snap is not None:
                size = snap.block_size if snap.block_size > 0 else 1
                blocks[backend] = -(-(tokens + most) // size)  # estimator.blocks_needed, in integers
                if snap.prefix_cache_hit_rate > 0:
                    prefix[backend] = snap.prefix_cache_hit_rate
            per_token = (snap.kv_bytes_per_token if snap else 0) or dep.spec.kv_bytes_per_token
            if per_token:
                kv[backend] = (tokens + most) * per_token  # estimator.kv_bytes, inline
            price = local_price(dep.local_price, snap) if dep.per_gpu_hour else dep.fixed_local_price
        else:
            price = dep.hosted_price
        if price is not None:
            costs[backend] = price.cost(tokens, output if output < most else most)
    return per_backend, kv, blocks, costs, prefix, outputs


def build_facts(compiled: CompiledPolicy, body: Mapping[str, Any], team: str, live: LiveState, *,
                counter: TokenCounter, calibration: Calibration, headers: Mapping[str, str] | None = None,
                team_p90: int | None = None, over_budget: bool = False, now_unix: float = 0.0,
                prompt_tokens: int | None = None, difficulty: Difficulty | None = None,
                category: Category | None = None, scores: PromptScores | None = None) -> RequestFacts:
    """The facts about one chat/completions request; raises RoutingError for an unknown model.
    `prompt_tokens`: the prompt already counted (with the alias's encoding), e.g. off the event loop.
    `difficulty` scores the prompt and `category` finds its nearest policy category (policies.quality);
    each is called only when a rule of the policy uses it, and not at all when `scores` are given
    (scored off the event loop, or by an earlier decision for the same request)."""
    alias = resolve_alias(compiled, str(body.get("model", "")), team)
    prompt = counter.count_prompt(body, alias.encoding) if prompt_tokens is None else prompt_tokens
    output, output_source = expected_output(compiled, body, team, team_p90)
    capped = None if output_source == "max_tokens" else _choices(body)  # n, where a default max_tokens caps
    per_backend, kv, blocks, costs, prefix, outputs = _per_backend(compiled, alias, live, calibration, prompt,
                                                                   output, capped)
    if scores is None:
        scores = score_prompt(compiled, body, difficulty, category)
    return RequestFacts(
        team=team, model_alias=alias.name, prompt_tokens=prompt, expected_output_tokens=output,
        stream=body.get("stream") is True, headers=_x_headers(headers), tags=_request_tags(compiled, team, body),
        kv_bytes=kv, blocks_needed=blocks, est_cost_usd=costs, over_budget=over_budget, now=now_unix,
        prompt_tokens_by_backend=per_backend, prefix_hit_rate=prefix, encoding=alias.encoding,
        output_source=output_source, output_tokens_by_backend=outputs,
        difficulty=scores.difficulty, category=scores.category, structured_output=asked_field(body),
    )


def _x_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    if not headers:
        return {}
    return {k.lower(): v for k, v in headers.items() if k[:2].lower() == "x-"}
