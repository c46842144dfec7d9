"""Explicit-bucket histograms kept by us (a dict update per value) and handed to the Prometheus reader as OTel
histogram points at collection time: the same series, buckets, sum and count the SDK's own Histogram would give,
without its per-measurement cost (attribute copy and hashing, exemplar filter, locks: ~95 k instructions)."""
from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from dataclasses import replace

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

Attributes = tuple[tuple[str, str], ...]
CARDINALITY_LIMIT = 2000  # the SDK's default per metric stream; later attribute sets fold into the overflow one
OVERFLOW: tuple[tuple[str, bool], ...] = (("otel.metric.overflow", True),)


class HistogramTotals:
    """One histogram's points by attribute set, as the SDK's explicit-bucket aggregation keeps them (cumulative):
    a value lands in the first bucket whose bound is ≥ it; non-finite and negative values are dropped."""

    def __init__(self, name: str, unit: str, description: str, bounds: tuple[float, ...]) -> None:
        self.name, self.unit, self.description, self.bounds = name, unit, description, bounds
        self._start_ns = time.time_ns()
        # attributes → [bucket counts, sum since the last collection, sum before it, min, max]
        self._points: dict[Attributes, list] = {}  # type: ignore[type-arg]
        self._lock = threading.Lock()  # recorded on the ledger's thread, read on the scraping one

    def record(self, value: float, attributes: Attributes) -> None:
        if not math.isfinite(value) or value < 0:  # what the SDK's Histogram.record ignores
            return
        index = bisect_left(self.bounds, value)
        with self._lock:
            point = self._points.get(attributes)
            if point is None:
                point = self._new_point(attributes)
            point[0][index] += 1
            point[1] += value
            if value < point[3]:
                point[3] = value
            if value > point[4]:
                point[4] = value

    def _new_point(self, attributes: Attributes) -> list:  # type: ignore[type-arg]
        if len(self._points) >= CARDINALITY_LIMIT:
            attributes = OVERFLOW  # type: ignore[assignment]
            if attributes in self._points:
                return self._points[attributes]
        point = self._points[attributes] = [[0] * (len(self.bounds) + 1), 0, 0, math.inf, -math.inf]
        return point

    def metric(self) -> Metric | None:
        """The cumulative points now (None before the first value). The sum adds this period's to the earlier
        ones as the SDK does at each collection, so even its last digits are the SDK's."""
        now = time.time_ns()
        with self._lock:
            points = []
            for attributes, point in self._points.items():
                point[2], point[1] = point[1] + point[2], 0
                counts = tuple(point[0])
                points.append(HistogramDataPoint(
                    attributes=dict(attributes), start_time_unix_nano=self._start_ns, time_unix_nano=now,
                    count=sum(counts), sum=point[2], bucket_counts=counts, explicit_bounds=self.bounds,
                    min=point[3], max=point[4]))
        if not points:
            return None
        return Metric(name=self.name, description=self.description, unit=self.unit,
                      data=Histogram(data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE))


class TotalsReader(PrometheusMetricReader):
    """The Prometheus reader, adding the histograms registered with it (HistogramTotals) to each collection
    under their meter's scope, ahead of that scope's SDK instruments."""

    def __init__(self, *args, resource: Resource, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._resource = resource
        self._histograms: dict[str, list[HistogramTotals]] = {}  # scope name → its histograms
        self._histograms_lock = threading.Lock()

    def add_histogram(self, scope: str, histogram: HistogramTotals) -> None:
        with self._histograms_lock:
            self._histograms.setdefault(scope, []).append(histogram)

    def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> None:  # type: ignore[no-untyped-def]
        with self._histograms_lock:
            histograms = {scope: list(found) for scope, found in self._histograms.items()}
        extra = {scope: [m for h in found if (m := h.metric()) is not None] for scope, found in histograms.items()}
        extra = {scope: found for scope, found in extra.items() if found}
        if extra:
            metrics_data = _with_metrics(metrics_data, extra, self._resource)
        super()._receive_metrics(metrics_data, timeout_millis, **kwargs)


def _with_metrics(data: MetricsData | None, extra: dict[str, list[Metric]], resource: Resource) -> MetricsData:
    """`data` with each scope's extra metrics put first in that scope (a new scope, or resource, if none)."""
    resources = list(data.resource_metrics) if data is not None else []
    if not resources:
        resources = [ResourceMetrics(resource=resource, scope_metrics=[], schema_url=resource.schema_url)]
    first = resources[0]
    scopes = list(first.scope_metrics)
    for name, metrics in extra.items():
        at = next((i for i, s in enumerate(scopes) if s.scope.name == name and not s.scope.version), None)
        if at is None:
            scopes.append(ScopeMetrics(scope=InstrumentationScope(name), metrics=metrics, schema_url=""))
        else:
            scopes[at] = replace(scopes[at], metrics=[*metrics, *scopes[at].metrics])
    resources[0] = replace(first, scope_metrics=scopes)
    return MetricsData(resource_metrics=resources)
