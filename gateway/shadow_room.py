"""Whether a shadow call may run on a local engine now: the fit a client request's kv_fit takes there
(KV blocks free after this gateway's holds, context, queue, circuit, team fairness). A shadow call is
best effort: one that does not fit now is dropped, never queued at the engine ahead of clients. Pure."""
from __future__ import annotations

from dataclasses import replace

from policies.compiled import CompiledPolicy
from policies.decision import RequestFacts
from policies.estimator import blocks_needed
from policies.live import LiveState
from policies.strategies.base import Context
from policies.strategies.kv_fit import engine_fit


def shadow_facts(facts: RequestFacts, backend: str, live: LiveState) -> RequestFacts:
    """The request's facts with the KV blocks it needs on `backend` (a shadow model named in
    `shadow.models` is no deployment of the alias, so build_facts did not count them)."""
    snap = live.engine(backend)
    if backend in facts.blocks_needed or snap is None:
        return facts
    tokens = facts.prompt_tokens_by_backend.get(backend, facts.prompt_tokens)
    need = blocks_needed(tokens, facts.output_on(backend), snap.block_size)
    return replace(facts, blocks_needed={**facts.blocks_needed, backend: need})


def no_room(compiled: CompiledPolicy, facts: RequestFacts, live: LiveState, backend: str) -> str | None:
    """Why `backend` cannot take this shadow call now, or None: it fits (or is hosted: no KV to hold).
    An engine whose state is unknown (stale, not yet polled) does not fit: a client request may try
    one as a last resort, a shadow call has no reason to."""
    if backend not in compiled.engines:
        return None
    alias = compiled.aliases.get(facts.model_alias)
    if alias is None:  # the policy in force no longer has the alias: nothing to weigh the engine by
        return f"{backend}: alias {facts.model_alias!r} not in the policy"
    fit = engine_fit(Context(compiled, alias, facts, live, frozenset((backend,))), backend, None)
    return None if fit.key is not None else fit.note
