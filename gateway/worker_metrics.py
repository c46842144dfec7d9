"""GET /metrics under `hybridgw serve --workers N`: a scrape reaches one worker, so each worker
publishes its Prometheus text to the supervisor's runtime folder every PUBLISH_EVERY_S, and the one
that answers merges its own (fresh) with the others' (at most that old), every series labelled
`worker="I"` — counters stay monotonic per worker across scrapes; sum them `without (worker)`."""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from observability.metrics import Metrics

log = logging.getLogger("hybridgw.workers")
PUBLISH_EVERY_S = 2.0


class _Families:
    """A collector that yields parsed metric families (for generate_latest)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def merged(texts: Mapping[int, str]) -> bytes:
    """One Prometheus text from each worker's ({index: text}), each sample labelled with its worker."""
    by_name: dict[str, Metric] = {}
    for worker, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            samples = [s._replace(labels={**s.labels, "worker": str(worker)}) for s in family.samples]
            if family.name in by_name:
                by_name[family.name].samples.extend(samples)
            else:
                family.samples = samples
                by_name[family.name] = family
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(by_name.values())))  # type: ignore[arg-type]
    return generate_latest(registry)


@dataclass(frozen=True)
class WorkerMetrics(Metrics):
    folder: Path  # the supervisor's runtime folder (0700)
    index: int

    def _path(self, index: int) -> Path:
        return self.folder / f"metrics-{index}.prom"

    def exposition(self) -> bytes:
        texts = {self.index: super().exposition().decode()}
        for path in self.folder.glob("metrics-*.prom"):
            index = int(path.stem.split("-", 1)[1])
            if index != self.index:
                try:
                    texts[index] = path.read_text()
                except OSError:
                    continue  # being replaced, or its worker's folder is going away
        return merged(texts)

    def publish(self) -> None:
        """Write this worker's own text where the others read it (atomically: write, then rename)."""
        path = self._path(self.index)
        scratch = path.with_suffix(f".{os.getpid()}.tmp")
        scratch.write_bytes(super().exposition())
        os.replace(scratch, path)

    def start_publishing(self, stop: threading.Event) -> threading.Thread:
        def loop() -> None:
            while not stop.wait(PUBLISH_EVERY_S):
                try:
                    self.publish()
                except Exception:  # a full disk must not end the worker's metrics for good: try again
                    log.exception("worker %d: publishing its metrics failed", self.index)

        thread = threading.Thread(target=loop, name="worker-metrics", daemon=True)
        thread.start()
        return thread
