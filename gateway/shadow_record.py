"""What a shadow call leaves behind: its UsageRecord (the team's spend, tagged `shadow` so reports can
tell it apart; id = the served request's id + ".shadow") and the pair kept for retraining."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from gateway.usage_emit import provider_of
from observability.shadow_pairs import Answer, ShadowPair
from observability.usage import UsageRecord
from policies.shadow_spec import SHADOW_RULE

if TYPE_CHECKING:
    from gateway.services import Services
    from gateway.shadow import ShadowJob



def shadow_record(svc: Services, job: ShadowJob, answer: Answer, sent_wall: float) -> UsageRecord:
    ex, target = job.ex, job.target
    ok = answer.status == "ok"
    # a failed or aborted call: its prompt as estimated, priced as a served request's would be (usage_emit)
    prompt = answer.prompt_tokens if ok else ex.estimated_prompt_tokens
    completion = answer.completion_tokens if ok else 0
    cost = svc.pricing.cost_usd(target, prompt, completion)
    return UsageRecord(
        request_id=ex.request_id + ".shadow", time=sent_wall, team=ex.team, key_id=ex.key_id,
        model_alias=ex.alias, backend=target.backend, model=target.model, rule=SHADOW_RULE,
        status=answer.status, http_status=200 if ok else 499 if answer.status == "aborted" else 502, stream=False,
        prompt_tokens=prompt, completion_tokens=completion,
        estimated_prompt_tokens=ex.estimated_prompt_tokens, estimated_completion_tokens=ex.estimated_completion_tokens,
        usage_source=answer.usage_source if ok else "counted", cost_usd=cost, ttft_s=None, itl_p50_s=None, itl_p95_s=None,
        itl_max_s=None, e2e_s=answer.latency_s or 0.0, error_type="" if ok else "shadow_upstream_error",
        tags={**ex.tags, "shadow": "true", "shadow_of": ex.request_id},
        provider=provider_of(svc.catalog.backends.get(target.backend)), operation="chat",
        client_request_id=ex.client_request_id,
    )


def pair_of(job: ShadowJob, answer: Answer) -> ShadowPair:
    ex, facts = job.ex, job.ex.facts
    return ShadowPair(
        request_id=ex.request_id, team=ex.team, time=ex.clock.arrival_wall, model_alias=ex.alias,
        messages=job.messages, served=job.served, shadow=answer,
        backends=(job.spec.backends[0], job.spec.backends[1]),
        difficulty=facts.difficulty if facts is not None else None,
        category=facts.category if facts is not None else None, stream=ex.stream,
        extra={"stored_at": round(time.time(), 3)},
    )
