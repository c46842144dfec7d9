"""The OTLP/HTTP span exporter with our encoder (observability/trace_otlp.py) in place of the SDK's: the
same request bytes' meaning, the SDK's transport (endpoint, headers, TLS, compression, retries, timeout
from the OTEL_EXPORTER_OTLP_* environment) and its export metrics; ~0.3× the encoding CPU."""
from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from observability.trace_otlp import SpanEncoder

log = logging.getLogger(__name__)


class CompactOTLPSpanExporter(OTLPSpanExporter):
    """OTLPSpanExporter whose export() encodes with SpanEncoder. It reaches the parent's transport
    (`_client`), which is private: tests/unit/test_trace_otlp.py posts through it to a real receiver,
    so an SDK upgrade that moves it fails there, not in production."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._encoder = SpanEncoder()  # export() runs on the batch processor's one thread

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = self._encoder.encode(spans)
            except Exception as error:  # noqa: BLE001 - one bad attribute must not stop the export thread
                log.error("failed to encode a span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            if 0 < self._max_request_size < len(data):
                log.warning("dropping a span batch of %d bytes (over max_request_size %d)", len(data),
                            self._max_request_size)
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
