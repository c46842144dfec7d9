"""The bench's self-contained HTML report (placeholder until the plots land)."""
from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from observability.bench.metrics import Summary
from observability.bench.output import render_table
from observability.bench.records import RequestRecord


def render_html(settings: dict[str, Any], summary: Summary, records: Sequence[RequestRecord]) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>hybridgw bench</title></head>'
            f"<body><pre>{escape(render_table(summary))}</pre></body></html>\n")
