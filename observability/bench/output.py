"""What a run leaves behind: the summary table for the terminal, results.json (settings, summary,
every request), requests.csv (one row per request) and the live progress line."""

from __future__ import annotations

import csv
import io
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, TextIO

import orjson

from observability.bench import metrics
from observability.bench.metrics import Stats, Summary
from observability.bench.records import RequestRecord
from observability.bench.sweep import Level

CSV_FIELDS = (
    "index",
    "pattern",
    "team",
    "tenant",
    "warmup",
    "isl",
    "osl",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "status",
    "backend",
    "error",
    "error_detail",
    "wall_time",
    "send_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
    "itl_mean_s",
    "itl_max_s",
    "content_chunks",
)


def _ms(s: Stats | None, field: str) -> str:
    return "-" if s is None else f"{getattr(s, field) * 1000:.1f}"


def render_table(summary: Summary) -> str:
    s = summary
    lines = [
        f"requests        {s.requests} measured, {s.ok} ok, {s.requests - s.ok} failed, {s.duration_s:.2f} s",
        (
            f"throughput      {s.request_throughput:.2f} req/s, {s.output_token_throughput:.1f} output tok/s "
            f"({s.input_tokens} tokens in, {s.output_tokens} out)"
        ),
    ]
    if s.goodput is not None:
        lines.append(
            f"goodput         {s.goodput:.2f} req/s within every SLO "
            f"({s.slo_attainment or 0:.1%} of requests)"
        )
    lines.append(f"{'(ms)':<15} {'mean':>9} {'p50':>9} {'p90':>9} {'p95':>9} {'p99':>9} {'max':>9} {'n':>7}")
    for name, st in (("TTFT", s.ttft), ("ITL", s.itl), ("TPOT", s.tpot), ("E2E", s.e2e)):
        cells = " ".join(f"{_ms(st, f):>9}" for f in ("mean", "p50", "p90", "p95", "p99", "max"))
        lines.append(f"{name:<15} {cells} {st.count if st else 0:>7}")
    if len(s.patterns) > 1:
        for p in s.patterns:
            lines.append(
                f"  {p.pattern:<20} n={p.requests:<5} TTFT p50 {_ms(p.ttft, 'p50')} ms, "
                f"E2E p50 {_ms(p.e2e, 'p50')} ms"
            )
    if s.backends:
        lines.append(
            "backends        " + ", ".join(f"{name} {share:.1%}" for name, share in s.backends.items())
        )
    if s.errors:
        lines.append("errors          " + ", ".join(f"{kind} {n}" for kind, n in s.errors.items()))
    return "\n".join(lines) + "\n"


def client_line(cpu_s: float, wall_s: float) -> str:
    """The client's own load: near one full core, it (not the server) may be what limits the numbers."""
    share = cpu_s / wall_s if wall_s > 0 else 0.0
    warn = "  <- the client may be the bottleneck" if share > 0.8 else ""
    return f"client          {cpu_s:.2f} s CPU over {wall_s:.2f} s ({share:.0%} of one core){warn}\n"


def request_row(r: RequestRecord) -> dict[str, Any]:
    gaps = metrics.itls(r)
    return {
        "index": r.index,
        "pattern": r.pattern,
        "team": r.team,
        "tenant": r.tenant,
        "warmup": r.warmup,
        "isl": r.isl,
        "osl": r.osl,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cached_tokens": r.cached_tokens,
        "status": r.status,
        "backend": r.backend,
        "error": r.error,
        "error_detail": r.error_detail,
        "wall_time": round(r.wall_time, 6),
        "send_s": r.send_s,
        "ttft_s": metrics.ttft(r),
        "tpot_s": metrics.tpot(r),
        "e2e_s": metrics.e2e(r),
        "itl_mean_s": sum(gaps) / len(gaps) if gaps else None,
        "itl_max_s": max(gaps) if gaps else None,
        "content_chunks": len(r.chunk_s),
    }


def render_json(
    settings: dict[str, Any],
    summary: Summary,
    records: Sequence[RequestRecord],
    stopped: str | None,
    levels: Sequence[Level] = (),
) -> bytes:
    requests = [{**request_row(r), "chunk_s": r.chunk_s} for r in records]
    body = {"settings": settings, "stopped": stopped, "summary": asdict(summary), "requests": requests}
    if levels:
        body["sweep"] = [
            {"kind": lv.kind, "load": lv.load, "saturated": lv.saturated, "summary": asdict(lv.summary)}
            for lv in levels
        ]
    return orjson.dumps(body, option=orjson.OPT_INDENT_2)


def render_csv(records: Sequence[RequestRecord]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: "" if v is None else v for k, v in request_row(r).items()})
    return out.getvalue()


class Progress:
    """One status line: rewritten in place on a terminal, every few seconds otherwise (logs, CI)."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, enabled: bool = True) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = stream.isatty()
        self.every_s = 0.25 if self.tty else 5.0
        self.start = self.last = time.monotonic()
        self.done = self.failed = self.tokens = 0
        self.ttfts: list[float] = []

    def __call__(self, r: RequestRecord) -> None:
        if r.warmup:
            return
        self.done += 1
        self.failed += 0 if r.ok else 1
        self.tokens += r.output_tokens if r.ok else 0
        if (first := metrics.ttft(r)) is not None:
            self.ttfts.append(first)
        now = time.monotonic()
        if self.enabled and (now - self.last >= self.every_s or self.done == self.total):
            self.last = now
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        recent = sorted(self.ttfts[-200:])
        p50 = f"{metrics.percentile(recent, 50) * 1000:.0f} ms" if recent else "-"
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}  "
            f"{self.done / elapsed:.1f} req/s  {self.tokens / elapsed:.0f} tok/s  TTFT p50 {p50}  "
            f"errors {self.failed}"
        )
        self.stream.write(("\r" + line) if self.tty else line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
