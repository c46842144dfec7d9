"""The routing decision for one request: its facts (token count, output estimate, prompt scores,
prefix keys) and decide() on a compiled policy, plus the shadow policy's decision beside it. CPU only
(~0.1 ms for a 1k-token prompt); what a decision teaches is handed to the LiveBook."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from policies.compiled import CompiledPolicy
from policies.current import CurrentPolicy
from policies.decide import decide
from policies.decision import RequestFacts, RouteDecision
from policies.facts import PromptScores, build_facts, score_prompt
from policies.live import LiveState
from policies.live_book import LiveBook
from policies.quality.lazy import LazyQuality
from policies.tokens import TokenCounter

log = logging.getLogger("hybridgw.policy")


class Decider:
    def __init__(self, policy: CurrentPolicy, live: LiveBook, counter: TokenCounter | None = None,
                 quality: LazyQuality | None = None, wall_clock: Callable[[], float] = time.time) -> None:
        self._policy, self._live, self.wall_clock = policy, live, wall_clock
        self.counter = counter or TokenCounter()
        self.quality = quality or LazyQuality()  # loads the model (~0.5 s) only for a policy that uses it
        self.warm()

    def warm(self) -> None:
        """Load what the policy in force needs (encodings, prompt models) so no request pays for it."""
        compiled = self._policy.current
        self.counter.warm({a.encoding for a in compiled.aliases.values()})
        if compiled.uses_difficulty or compiled.uses_category:
            self.quality.use(compiled.difficulty_weights)
            self.quality.warm(compiled.policy.categories)

    def build_facts(self, body: Mapping[str, Any], team: str, *, headers: Mapping[str, str] | None = None,
                    over_budget: bool = False, compiled: CompiledPolicy | None = None,
                    live: LiveState | None = None, prompt_tokens: int | None = None,
                    scores: PromptScores | None = None) -> RequestFacts:
        compiled, live = compiled or self._policy.current, live or self._live.live_state()
        book = self._live
        facts = build_facts(compiled, body, team, live,
                            counter=self.counter, calibration=book.calibration, headers=headers,
                            team_p90=book.outputs.p90(team), over_budget=over_budget, now_unix=self.wall_clock(),
                            prompt_tokens=prompt_tokens, difficulty=self.quality,
                            category=self.quality.category, scores=scores)
        if compiled.uses_prefix_index:
            facts = book.prefixes.annotate(facts, body, compiled, live)
        return facts

    def count_prompt(self, body: Mapping[str, Any], encoding: str) -> int:
        return self.counter.count_prompt(body, encoding)

    def score(self, body: Mapping[str, Any], compiled: CompiledPolicy | None = None) -> PromptScores:
        """The prompt's difficulty and category where the policy uses them (thread-safe: e.g. in the
        worker thread that counts a large prompt)."""
        return score_prompt(compiled or self._policy.current, body, self.quality, self.quality.category)

    def route(self, facts: RequestFacts, *, compiled: CompiledPolicy | None = None,
              live: LiveState | None = None) -> RouteDecision:
        """Decide, let the LiveBook learn from the decision, and add the shadow policy's."""
        compiled, live = compiled or self._policy.current, live or self._live.live_state()
        decision = decide(compiled, facts, live)
        if self._live.decided(compiled, facts, decision, live):
            decision = replace(decision, probe=True)
        shadow = self._policy.shadow
        if shadow is not None and facts.model_alias in shadow.aliases:
            other = decide(shadow, facts, live)
            decision = replace(decision, shadow_rule=f"shadow-policy:{other.rule}",
                               shadow_targets=other.targets, shadow_reason=other.reason)
        if decision.shadow_differs:
            log.info(json.dumps({"event": "policy.shadow", "rule": decision.rule, "shadow_rule": decision.shadow_rule,
                                 "targets": [t.backend for t in decision.targets],
                                 "shadow_targets": [t.backend for t in decision.shadow_targets]}))
        return decision
