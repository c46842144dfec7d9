"""Build one backend object per resolved backend (not opened yet: the app's lifespan opens them), with
the adapter its kind names in policies.backend_kinds (imported here, on first use of the kind)."""
from __future__ import annotations

import importlib

from gateway.backends.base import Backend
from gateway.catalog import Catalog, ResolvedBackend
from policies.backend_kinds import BACKEND_KINDS


def build_backend(spec: ResolvedBackend) -> Backend:
    kind = BACKEND_KINDS.get(spec.kind)
    if kind is None:
        raise ValueError(f"backend {spec.name}: unknown kind {spec.kind!r}")
    module, _, name = kind.adapter.partition(":")
    adapter = getattr(importlib.import_module(module), name)  # litellm itself loads on open()
    backend: Backend = adapter(spec)
    return backend


def build_backends(catalog: Catalog) -> dict[str, Backend]:
    return {name: build_backend(spec) for name, spec in catalog.backends.items()}
