"""Build one backend object per resolved backend (not opened yet: the app's lifespan opens them)."""
from __future__ import annotations

from gateway.backends.base import Backend
from gateway.backends.openai_http import OpenAIHTTPBackend
from gateway.catalog import Catalog, ResolvedBackend


def build_backend(spec: ResolvedBackend) -> Backend:
    if spec.kind in ("openai", "engine"):  # our engine speaks OpenAI's wire format
        return OpenAIHTTPBackend(spec)
    if spec.kind == "litellm":
        from gateway.backends.litellm_backend import LiteLLMBackend  # litellm itself loads on open()

        return LiteLLMBackend(spec)
    raise ValueError(f"backend {spec.name}: unknown kind {spec.kind!r}")


def build_backends(catalog: Catalog) -> dict[str, Backend]:
    return {name: build_backend(spec) for name, spec in catalog.backends.items()}
