"""What every SVG plot of the reports shares (`hybridgw report`, `hybridgw bench`): the frame with
title and axis labels, linear scales, nice tick values (1, 2, 5 × 10^k), a legend, one colour per
name, box plots side by side, and the heat map's colour ramp with its scale. Strings only: no JS, no
external assets."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from observability.report import Box

W, H = 640, 340
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 30, 50
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")


def scale(v: float, d0: float, d1: float, r0: float, r1: float) -> float:
    return r0 if d1 == d0 else r0 + (v - d0) * (r1 - r0) / (d1 - d0)


def short(n: float) -> str:
    """Token-bucket edges (powers of two): 1024 → "1k", 16384 → "16k"."""
    for div, suffix in ((1 << 20, "M"), (1 << 10, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:g}"


def nice_step(top: float, count: int = 4) -> float:
    """A step of 1, 2 or 5 × 10^k that cuts [0, top] into about `count` parts."""
    if top <= 0 or not math.isfinite(top):
        return 1.0
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    norm = raw / mag
    return (1 if norm < 1.5 else 2 if norm < 3 else 5 if norm < 7 else 10) * mag


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """0, step, 2·step, … up to `top` (never past it): 4125.9 → 0, 1000, …, 4000."""
    step = nice_step(top, count)
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def tick_label(v: float, step: float) -> str:
    """40000 → "40k", 2500000 → "2.5M", 0.05 (step 0.05) → "0.05": as few digits as the step needs."""
    if abs(v) >= 1e6:
        return f"{v / 1e6:g}M"
    if abs(v) >= 1e3:
        return f"{v / 1e3:g}k"
    digits = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{v:.{digits}f}"


def colors(names: Sequence[str]) -> dict[str, str]:
    """One colour per name (backend, pattern), the same in every plot."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def xticks(xmax: float, right: float = W - RIGHT) -> str:
    """Ticks at nice values along the x axis, for a linear scale from 0 (LEFT) to xmax (right)."""
    step, out = nice_step(xmax), []
    for v in nice_ticks(xmax):
        x = scale(v, 0, xmax, LEFT, right)
        out.append(f'<line x1="{x:.1f}" y1="{H - BOTTOM}" x2="{x:.1f}" y2="{H - BOTTOM + 4}" class="axis"/>'
                   f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{tick_label(v, step)}</text>')
    return "".join(out)


def yticks(top: float) -> str:
    """Ticks at nice values up the y axis, for a linear scale from 0 (bottom) to top (TOP)."""
    step, out = nice_step(top), []
    for v in nice_ticks(top):
        y = scale(v, 0, top, H - BOTTOM, TOP)
        out.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{LEFT}" y2="{y:.1f}" class="axis"/>'
                   f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" class="grid" stroke="#eee"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick_label(v, step)}</text>')
    return "".join(out)


def legend(names: Sequence[str], color: dict[str, str]) -> str:
    """Swatches and names in a row above the plot area."""
    return "".join(f'<g class="legend"><rect x="{LEFT + 10 + 110 * i}" y="{TOP - 4}" width="10" height="10" '
                   f'fill="{color[n]}"/><text x="{LEFT + 24 + 110 * i}" y="{TOP + 5}">{escape(n)}</text></g>'
                   for i, n in enumerate(names))


def stacked_bar(x: float, width: float, segments: Sequence[tuple[str, float]], ymax: float, color: dict[str, str],
                title: Callable[[str, float], str]) -> tuple[list[str], float]:
    """One bar of (name, value) segments stacked bottom up at `x` (each titled `title(name, value)`); its
    rects and its total."""
    rects, base = [], 0.0
    for name, value in segments:
        y0, y1 = scale(base, 0, ymax, H - BOTTOM, TOP), scale(base + value, 0, ymax, H - BOTTOM, TOP)
        rects.append(f'<rect class="bar" x="{x:.1f}" y="{y1:.1f}" width="{width:.1f}" '
                     f'height="{max(y0 - y1, 0.5):.1f}" fill="{color[name]}"><title>{title(name, value)}</title></rect>')
        base += value
    return rects, base


def ramp(t: float) -> str:
    """The heat map's colour at t in [0, 1] (light to dark blue)."""
    t = min(max(t, 0.0), 1.0)
    return f"rgb({int(247 - 239 * t)},{int(251 - 203 * t)},{int(255 - 148 * t)})"


def color_scale(top: int, x: float, label: str = "requests") -> str:
    """A vertical colour bar for counts 1 … top on a log scale, with its ticks, at x."""
    y0, y1, width = H - BOTTOM, TOP + 10, 12
    stops = "".join(f'<stop offset="{k / 4:.2f}" stop-color="{ramp(k / 4)}"/>' for k in range(5))
    out = [f'<defs><linearGradient id="heat-ramp" x1="0" y1="1" x2="0" y2="0">{stops}</linearGradient></defs>'
           f'<rect class="scale" x="{x:.1f}" y="{y1}" width="{width}" height="{y0 - y1}" fill="url(#heat-ramp)"/>'
           f'<text x="{x + width / 2:.1f}" y="{y1 - 4}" text-anchor="middle">{escape(label)}</text>']
    marks = sorted({1, top, *(v for v in (10, 100, 1000, 10_000, 100_000) if v < top)})
    for v in marks:
        y = scale(math.log1p(v), 0, math.log1p(top), y0, y1)
        out.append(f'<text x="{x + width + 4:.1f}" y="{y + 4:.1f}" class="scale-tick">{v:,}</text>')
    return "".join(out)


def frame(plot_id: str, title: str, body: str, xlabel: str, ylabel: str) -> str:
    return (
        f'<svg id="{plot_id}" class="plot" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img"><title>{escape(title)}</title>'
        f'<text x="{W / 2}" y="18" text-anchor="middle" class="ptitle">{escape(title)}</text>'
        f'<line x1="{LEFT}" y1="{H - BOTTOM}" x2="{W - RIGHT}" y2="{H - BOTTOM}" class="axis"/>'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}" class="axis"/>'
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 10}" text-anchor="middle">{escape(xlabel)}</text>'
        f'<text x="16" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {(TOP + H - BOTTOM) / 2})">{escape(ylabel)}</text>{body}</svg>'
    )


def empty(plot_id: str, title: str) -> str:
    body = f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="nodata">no data in this period</text>'
    return frame(plot_id, title, body, "", "")


def box_plot(plot_id: str, title: str, boxes: Sequence[tuple[str, Box]], color: dict[str, str],
             labels: tuple[str, str], tooltip: Callable[[str, Box], str], caption: Callable[[str, Box], str]) -> str:
    """One box per name (whiskers p5–p95, box p25–p75, a line at p50), side by side on one y scale; `tooltip`
    and `caption` say what hovering a box and the text under it show. Empty when there is no box."""
    if not boxes:
        return empty(plot_id, title)
    ymax = max(b.p95 for _, b in boxes) * 1.1 or 1.0
    slot = (W - LEFT - RIGHT) / len(boxes)
    body = [yticks(ymax)]
    for k, (name, b) in enumerate(boxes):
        cx, half = LEFT + slot * (k + 0.5), min(slot * 0.3, 40)
        y = {q: scale(getattr(b, q), 0, ymax, H - BOTTOM, TOP) for q in ("p5", "p25", "p50", "p75", "p95")}
        body.append(
            f'<g class="box"><title>{escape(tooltip(name, b))}</title>'
            f'<line x1="{cx:.1f}" y1="{y["p5"]:.1f}" x2="{cx:.1f}" y2="{y["p95"]:.1f}" class="whisker"/>'
            f'<rect x="{cx - half:.1f}" y="{y["p75"]:.1f}" width="{2 * half:.1f}" '
            f'height="{max(y["p25"] - y["p75"], 1):.1f}" fill="{color[name]}"/>'
            f'<line x1="{cx - half:.1f}" y1="{y["p50"]:.1f}" x2="{cx + half:.1f}" y2="{y["p50"]:.1f}" class="median"/>'
            f'</g><text x="{cx:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{escape(caption(name, b))}</text>'
        )
    return frame(plot_id, title, "".join(body), *labels)
