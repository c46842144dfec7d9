"""The gateway's tracer, taken from the provider given to create_app (NoOp when None). Metrics are
recorded from each finished UsageRecord on the ledger's writer thread (observability.metrics)."""
from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import trace

SCOPE = "hybridgw.gateway"


@dataclass(frozen=True)
class Telemetry:
    tracer: trace.Tracer


def build_telemetry(tracer_provider: trace.TracerProvider | None) -> Telemetry:
    return Telemetry(tracer=(tracer_provider or trace.NoOpTracerProvider()).get_tracer(SCOPE))
