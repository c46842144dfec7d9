"""The gateway's OpenTelemetry handles, taken from the providers given to create_app (NoOp when
None). Instruments follow the GenAI semantic conventions; observability adds views/exporters."""
from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics, trace

SCOPE = "hybridgw.gateway"


@dataclass(frozen=True)
class Telemetry:
    tracer: trace.Tracer
    ttft: metrics.Histogram
    time_per_output_token: metrics.Histogram
    request_duration: metrics.Histogram
    token_usage: metrics.Histogram


def build_telemetry(tracer_provider: trace.TracerProvider | None,
                    meter_provider: metrics.MeterProvider | None) -> Telemetry:
    tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer(SCOPE)
    meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter(SCOPE)
    return Telemetry(
        tracer=tracer,
        ttft=meter.create_histogram("gen_ai.server.time_to_first_token", unit="s",
                                    description="Time to first chunk, measured at the gateway"),
        time_per_output_token=meter.create_histogram("gen_ai.server.time_per_output_token", unit="s",
                                                     description="Gap between streamed chunks"),
        request_duration=meter.create_histogram("gen_ai.server.request.duration", unit="s",
                                                description="Arrival to last byte"),
        token_usage=meter.create_histogram("gen_ai.client.token.usage", unit="{token}",
                                           description="Prompt and completion tokens per request"),
    )
