"""Small inline-SVG plots for the what-if report: grouped bars and time-series lines (no scripts)."""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

_W, _H, _L, _B, _T = 640, 220, 60, 30, 28  # width, height, left / bottom / top margins
_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")


def _frame(title: str, body: str, legend: Sequence[str], top: float, fmt: str) -> str:
    keys = "".join(f"<rect x='{_L + 120 * i}' y='{_H - 12}' width='10' height='10' fill='{_COLORS[i % 8]}'/>"
                   f"<text x='{_L + 120 * i + 14}' y='{_H - 3}' font-size='11'>{html.escape(name)}</text>"
                   for i, name in enumerate(legend))
    ticks = "".join(f"<text x='{_L - 4}' y='{_y(top * k / 4, top) + 4:.1f}' font-size='10' text-anchor='end'>"
                    f"{html.escape(fmt.format(top * k / 4))}</text>" for k in range(5))
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{_W}' height='{_H + 10}' role='img'>"
            f"<title>{html.escape(title)}</title><text x='{_L}' y='16' font-size='13'>{html.escape(title)}</text>"
            f"<line x1='{_L}' y1='{_H - _B}' x2='{_W - 10}' y2='{_H - _B}' stroke='#888'/>{ticks}{body}{keys}</svg>")


def _y(value: float, top: float) -> float:
    return _H - _B - (value / top if top > 0 else 0.0) * (_H - _B - _T)


def bars(title: str, groups: Sequence[tuple[str, Sequence[tuple[str, float]]]], fmt: str) -> str:
    """Stacked bars, one per group (e.g. per policy), each stacking its named parts."""
    series = list(dict.fromkeys(name for _, parts in groups for name, _ in parts))
    top = max((sum(max(0.0, v) for _, v in parts) for _, parts in groups), default=0.0) or 1.0
    slot = (_W - _L - 20) / max(1, len(groups))
    body = []
    for g, (label, parts) in enumerate(groups):
        x, base = _L + g * slot + slot * 0.2, 0.0
        for name, value in parts:
            value = max(0.0, value)
            y0, y1 = _y(base, top), _y(base + value, top)
            body.append(f"<rect x='{x:.1f}' y='{y1:.1f}' width='{slot * 0.6:.1f}' height='{y0 - y1:.1f}' "
                        f"fill='{_COLORS[series.index(name) % 8]}'><title>{html.escape(f'{label} {name}: ' + fmt.format(value))}"
                        "</title></rect>")
            base += value
        shown = fmt.format(base) if parts else "no SLO / no data"
        body.append(f"<text x='{x + slot * 0.3:.1f}' y='{_H - _B + 14}' font-size='11' text-anchor='middle'>"
                    f"{html.escape(label)} ({html.escape(shown)})</text>")
    return _frame(title, "".join(body), series, top, fmt)


def lines(title: str, bucket_s: float, series: Mapping[str, Sequence[float]], fmt: str) -> str:
    """One polyline per series over time buckets of `bucket_s` seconds."""
    top = max((max(values, default=0.0) for values in series.values()), default=0.0) or 1.0
    body = []
    for k, values in enumerate(series.values()):
        step = (_W - _L - 20) / max(1, len(values) - 1)
        points = " ".join(f"{_L + i * step:.1f},{_y(v, top):.1f}" for i, v in enumerate(values))
        body.append(f"<polyline fill='none' stroke='{_COLORS[k % 8]}' stroke-width='1.5' points='{points}'/>")
    span = bucket_s * max((len(v) for v in series.values()), default=0)
    body.append(f"<text x='{_W - 10}' y='{_H - _B + 14}' font-size='10' text-anchor='end'>"
                f"{html.escape(_duration(span))} →</text>")
    return _frame(title, "".join(body), list(series), top, fmt)


def _duration(seconds: float) -> str:
    if seconds >= 7200:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"
