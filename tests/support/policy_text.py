"""Policy YAML the integration tests repeat: the fake OpenAI upstream as a backend, alone or beside an engine."""
from __future__ import annotations


def fake_backend(name: str, fake: str, price: tuple[float, float] | None = None) -> str:
    """An entry of `backends:` (block style): an OpenAI backend named `name` on the fake upstream whose base
    URL is `fake`, with an upstream key; priced (USD per million input, output tokens) when `price` is given."""
    text = f'  {name}:\n    kind: openai\n    base_url: "{fake}/v1"\n    api_key: upstream-key\n'
    if price is not None:
        text += f"    price: {{input_usd_per_mtok: {price[0]}, output_usd_per_mtok: {price[1]}}}\n"
    return text


def engine_and_hosted(fake: str, local: str = "") -> str:
    """`backends:` and `models:` of a tiny-random engine `local` (with the fields given, as YAML flow-mapping
    items) and the fake upstream as `hosted`; model `chat` deployed on both, local first."""
    fields = f"kind: engine, model: tiny-random, {local}" if local else "kind: engine, model: tiny-random"
    return f"""\
backends:
  local: {{{fields}}}
  hosted: {{kind: openai, base_url: "{fake}/v1", api_key: upstream-key}}
models:
  chat:
    deployments:
      - {{backend: local, model: tiny-random}}
      - {{backend: hosted, model: m}}
"""
