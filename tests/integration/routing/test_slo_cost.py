"""slo_cost end to end: the gateway's own TTFT observations feed the prediction. The cheap hosted
backend is tried first on its prior, answers slowly (1.2 s to the first byte), and from then on is
predicted over the 0.9 s bound, so requests go to the dear, fast one; the headers name rule and backend."""
from __future__ import annotations

from pathlib import Path

from tests.integration.routing.conftest import Fake, serving


def _policy(fake: str) -> str:
    return f"""
version: 1
backends:
  cheap: {{kind: openai, base_url: "{fake}/v1", expected_ttft_s: 0.2}}
  dear: {{kind: openai, base_url: "{fake}/v1", expected_ttft_s: 0.3}}
models:
  chat:
    deployments:
      - {{backend: cheap, model: "cheap;ttft_ms=1200"}}
      - {{backend: dear, model: dear}}
prices:
  "cheap;ttft_ms=1200": {{input_usd_per_mtok: 0.1, output_usd_per_mtok: 0.4}}
  dear: {{input_usd_per_mtok: 5, output_usd_per_mtok: 15}}
slos:
  interactive: {{ttft_p95_s: 1.0}}
teams:
  red: {{}}
rules:
  - {{name: slo-cost, strategy: slo_cost, candidates: [cheap, dear], slo: interactive}}
"""


def test_observed_ttft_moves_traffic_from_cheap_but_slow_to_dear_but_fast(fake: Fake, tmp_path: Path) -> None:
    with serving(tmp_path, _policy(fake.url), env={"OPENAI_API_KEY": "sk-test"}) as gw:
        first = gw.chat("chat")
        assert (first.status, first.rule, first.backend) == (200, "slo-cost", "cheap"), first
        for _ in range(3):  # cheap's observed 1.2 s is over 0.9 s: the dear, fast backend from now on
            after = gw.chat("chat")
            assert (after.status, after.rule, after.backend) == (200, "slo-cost", "dear"), after
