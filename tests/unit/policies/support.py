"""Builders for policy tests: a policy from YAML text, engine snapshots and live state."""
from __future__ import annotations

import textwrap
from types import MappingProxyType

from policies.compiled import CompiledPolicy, compile_policy
from policies.decision import RequestFacts
from policies.live import EngineSnapshot, HealthView, InFlight, LiveState
from policies.loader import load_policy

NOW = 1000.0
# Tuesday 2026-11-24 12:00:00 UTC
TUESDAY_NOON_UTC = 1795521600.0
# A valid policy file's text: one engine, one model on it, one rule (the reload tests edit or break it).
GOOD_POLICY = """\
backends:
  local: {kind: engine, model: smollm2}
models:
  chat:
    deployments: [{backend: local, model: smollm2}]
rules:
  - {name: first, route: [local]}
"""


def compiled(yaml_text: str, env: dict[str, str] | None = None, prices: dict | None = None) -> CompiledPolicy:
    loaded = load_policy(textwrap.dedent(yaml_text), "test.yaml", env or {})
    return compile_policy(loaded.policy, prices or {}, loaded.source, loaded.absent_backends)


def local_and_openai(local: str = "", openai: str = 'base_url: "http://up/v1"') -> str:
    """The policy head most of these tests share: an engine backend `local` and an OpenAI one `openai`
    (with the fields given, as YAML flow-mapping items), model `chat` deployed on both, local first."""
    fields = f"kind: engine, model: smollm2, {local}" if local else "kind: engine, model: smollm2"
    return f"""\
backends:
  local: {{{fields}}}
  openai: {{kind: openai, {openai}}}
models:
  chat:
    deployments:
      - {{backend: local, model: smollm2}}
      - {{backend: openai, model: gpt-4o-mini}}
"""


def engine(free: int = 1000, total: int = 1000, waiting: int = 0, running: int = 0, age: float = 0.1,
           block_size: int = 16, prefill_tps: float = 0.0, decode_tps: float = 0.0,
           max_model_len: int = 0, kv_bytes_per_token: int = 23040, max_num_seqs: int = 0,
           max_waiting: int = 0) -> EngineSnapshot:
    return EngineSnapshot(taken_at=NOW - age, model="smollm2", kv_bytes_per_token=kv_bytes_per_token,
                          block_size=block_size, num_blocks_total=total, num_blocks_free=free,
                          num_running=running, num_waiting=waiting, prefill_tokens_per_s=prefill_tps,
                          decode_tokens_per_s=decode_tps, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                          max_waiting=max_waiting)


def live(engines: dict[str, EngineSnapshot] | None = None, health: dict[str, HealthView] | None = None,
         reserved: dict[str, int] | None = None, *, in_flight: dict[str, InFlight] | None = None,
         unreachable: tuple[str, ...] = (), turn: int = 0) -> LiveState:
    """The state decide() reads at NOW; snapshots older than 1 s are stale. `in_flight`: this gateway's
    requests per engine since the poll (LiveState.num_waiting, queued_prompt_tokens)."""
    return LiveState(NOW, MappingProxyType(engines or {}), MappingProxyType(health or {}),
                     MappingProxyType(reserved or {}), 1.0, frozenset(unreachable),
                     in_flight=MappingProxyType(in_flight or {}), turn=turn)


def facts(team: str = "default", model: str = "chat", prompt: int = 100, output: int = 100,
          blocks: dict[str, int] | None = None, costs: dict[str, float] | None = None,
          headers: dict[str, str] | None = None, over_budget: bool = False, now: float = TUESDAY_NOON_UTC,
          stream: bool = False) -> RequestFacts:
    return RequestFacts(team=team, model_alias=model, prompt_tokens=prompt, expected_output_tokens=output,
                        stream=stream, headers=headers or {}, blocks_needed=blocks or {}, est_cost_usd=costs or {},
                        over_budget=over_budget, now=now)
