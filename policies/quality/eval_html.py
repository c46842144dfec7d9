"""`hybridgw router eval --html`: one self-contained page (inline SVG, no JS, no external assets) with
the quality-vs-share-of-strong-calls curve of every router and the metrics table."""
from __future__ import annotations

from collections.abc import Sequence
from html import escape

import numpy as np

from policies.quality.metrics import RouterResult

W, H = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 160, 30, 50
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#9c755f")
MAX_POINTS = 201  # a curve of 14k steps draws the same with 201 points


def _x(share: float) -> float:
    return LEFT + share * (W - LEFT - RIGHT)


def _y(value: float, low: float, high: float) -> float:
    return H - BOTTOM - (value - low) / ((high - low) or 1.0) * (H - TOP - BOTTOM)


def _pct(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.1f}%"


def _ci(low: float, high: float, fmt: str = "{:.3f}") -> str:
    return "" if np.isnan(low) else f" [{fmt.format(low)}, {fmt.format(high)}]"


def curve_svg(results: Sequence[RouterResult], weak_acc: float, strong_acc: float) -> str:
    low = min(weak_acc, *(float(r.quality.min()) for r in results)) - 0.01
    high = max(strong_acc, *(float(r.quality.max()) for r in results)) + 0.01
    parts = [(f'<svg id="plot-quality-curve" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'viewBox="0 0 {W} {H}" role="img"><title>quality vs share of strong calls</title>'),
             f'<line class="axis" x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}"/>',
             f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}"/>']
    for i in range(6):
        x = _x(i / 5)
        parts.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{20 * i}%</text>')
        v = low + (high - low) * i / 5
        parts.append(f'<text x="{LEFT - 6}" y="{_y(v, low, high) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for name, value in (("weak", weak_acc), ("strong", strong_acc)):
        y = _y(value, low, high)
        parts.append(f'<line class="ref" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}"/>'
                     f'<text x="{W - RIGHT + 4}" y="{y + 4:.1f}">{name} {value:.3f}</text>')
    for i, result in enumerate(results):
        idx = np.unique(np.linspace(0, len(result.share) - 1, MAX_POINTS).round().astype(int))
        points = " ".join(f"{_x(result.share[j]):.1f},{_y(result.quality[j], low, high):.1f}" for j in idx)
        color = PALETTE[i % len(PALETTE)]
        parts.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="2" points="{points}">'
                     f'<title>{escape(result.name)}</title></polyline>'
                     f'<text x="{W - RIGHT + 4}" y="{TOP + 16 * i + 40}" fill="{color}">{escape(result.name)}</text>')
    parts.append(f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 10}" text-anchor="middle">calls to the strong model</text>'
                 f'<text x="16" y="{(TOP + H - BOTTOM) / 2}" transform="rotate(-90 16 {(TOP + H - BOTTOM) / 2})" '
                 'text-anchor="middle">quality (mean correctness)</text></svg>')
    return "".join(parts)


def render_html(title: str, results: Sequence[RouterResult], weak_acc: float, strong_acc: float,
                notes: Sequence[str]) -> str:
    rows = "".join(
        f"<tr><td>{escape(r.name)}</td><td>{r.apgr:.3f}{_ci(*r.apgr_ci)}</td>"
        f"<td>{_pct(r.cpt50)}{_ci(*r.cpt50_ci, fmt='{:.1%}')}</td><td>{_pct(r.cpt80)}{_ci(*r.cpt80_ci, fmt='{:.1%}')}</td></tr>"
        for r in results)
    items = "".join(f"<li>{escape(n)}</li>" for n in notes)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>"
            "body{font:14px sans-serif;margin:24px}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
            "padding:4px 8px}svg text{font:12px sans-serif}.axis{stroke:#333}.ref{stroke:#999;stroke-dasharray:4 3}"
            f"</style></head><body><h1>{escape(title)}</h1><ul>{items}</ul>"
            "<table id='metrics'><tr><th>router</th><th>APGR [95% CI]</th><th>CPT(50%)</th><th>CPT(80%)</th></tr>"
            f"{rows}</table>{curve_svg(results, weak_acc, strong_acc)}</body></html>")
