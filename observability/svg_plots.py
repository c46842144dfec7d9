"""The report's plots as inline SVG strings (no JS, no external assets): ISL×OSL heat map (counts in
its cells, a colour scale), TTFT vs input length with its fitted line, ITL vs output position, e2e box
plots, daily cost by backend. Frame, ticks, legend and colours: observability/svg_plots_frame.py."""
from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from observability.report import Box, LineFit
from observability.svg_plots_frame import (
    BOTTOM,
    LEFT,
    RIGHT,
    TOP,
    H,
    W,
    box_plot,
    color_scale,
    colors,
    empty,
    frame,
    legend,
    ramp,
    scale,
    short,
    stacked_bar,
    xticks,
    yticks,
)

SCALE_W = 70  # room right of the heat map for its colour scale

def heatmap(matrix: Sequence[Sequence[int]], edges: Sequence[int], not_ok: int = 0) -> str:
    """Rows: input-length buckets (y, upwards); columns: output-length buckets (x); each cell's count in
    it (where it fits) and in its tooltip; a log colour scale on the right. `not_ok`: how many requests
    failed or were refused; they are not in the map (their output length says nothing), only in the label."""
    title = "Requests by input × output length (ISL × OSL)"
    used = [i for i, row in enumerate(matrix) if any(row)] + [j for row in matrix for j, c in enumerate(row) if c]
    if not used:
        return empty("plot-isl-osl", title)
    lo, hi = min(used), max(used)
    n = hi - lo + 1
    top = max(max(row) for row in matrix)
    total = sum(sum(row) for row in matrix)
    right = W - RIGHT - SCALE_W
    cw, ch = (right - LEFT) / n, (H - TOP - BOTTOM) / n
    cells, labels = [], []
    for i in range(lo, hi + 1):
        for j in range(lo, hi + 1):
            count = matrix[i][j]
            t = math.log1p(count) / math.log1p(top)
            x, y = LEFT + (j - lo) * cw, H - BOTTOM - (i - lo + 1) * ch
            cells.append(f'<rect class="cell" x="{x:.1f}" y="{y:.1f}" width="{cw:.1f}" height="{ch:.1f}" '
                         f'fill="{ramp(t)}"><title>ISL ≥{edges[i]}, OSL ≥{edges[j]}: {count}</title></rect>')
            if count and cw >= 8 * len(f"{count:,}") and ch >= 13:
                ink = "#fff" if t > 0.55 else "#222"
                cells.append(f'<text class="count" x="{x + cw / 2:.1f}" y="{y + ch / 2 + 4:.1f}" '
                             f'text-anchor="middle" style="fill:{ink}">{count:,}</text>')
        labels.append(f'<text x="{LEFT - 6}" y="{H - BOTTOM - (i - lo + 0.5) * ch + 4:.1f}" '
                      f'text-anchor="end">{short(edges[i])}</text>'
                      f'<text x="{LEFT + (i - lo + 0.5) * cw:.1f}" y="{H - BOTTOM + 16}" '
                      f'text-anchor="middle">{short(edges[i])}</text>')
    labels.append(color_scale(top, right + 14))
    xlabel = f"output tokens (bucket start) — n = {total:,}" + (f" completed; {not_ok:,} failed or refused, not shown" if not_ok else "")
    return frame("plot-isl-osl", title, "".join(cells + labels), xlabel, "input tokens (bucket start)")


def ttft_scatter(points: Sequence[tuple[int, float]], fit: LineFit | None, max_isl: float) -> str:
    title = "TTFT vs input length"
    if not points and fit is None:
        return empty("plot-ttft-isl", title)
    xmax = max([p[0] for p in points] + [max_isl, 1])
    line_end = fit.intercept_s + fit.slope_s_per_token * xmax if fit else 0.0
    ymax = max([p[1] for p in points] + [line_end, fit.intercept_s if fit else 0.0, 1e-3]) * 1.1
    body = [yticks(ymax * 1000)]
    for isl, ttft in points:
        body.append(f'<circle class="point" cx="{scale(isl, 0, xmax, LEFT, W - RIGHT):.1f}" '
                    f'cy="{scale(ttft, 0, ymax, H - BOTTOM, TOP):.1f}" r="2.5"/>')
    if fit is not None:
        y0 = scale(fit.intercept_s, 0, ymax, H - BOTTOM, TOP)
        y1 = scale(line_end, 0, ymax, H - BOTTOM, TOP)
        body.append(f'<line class="fit" x1="{LEFT}" y1="{y0:.1f}" x2="{W - RIGHT}" y2="{y1:.1f}"/>'
                    f'<text x="{W - RIGHT - 4}" y="{TOP + 14}" text-anchor="end" class="fitlabel">'
                    f'fit: {fit.slope_s_per_token * 1e6:.3g} ms per 1k input tokens + '
                    f'{fit.intercept_s * 1e3:.3g} ms (n={fit.n})</text>')
    body.append(xticks(xmax))
    return frame("plot-ttft-isl", title, "".join(body), f"input tokens — n = {len(points):,} requests", "TTFT (ms)")


def itl_by_position(profile: Sequence[tuple[int, float, int]]) -> str:
    title = "Inter-token latency vs output-token position"
    if not profile:
        return empty("plot-itl-position", title)
    xmax = max(math.log2(p[0]) for p in profile) + 1
    ymax = max(p[1] for p in profile) * 1.2
    xy = [(scale(math.log2(pos), 0, xmax, LEFT + 10, W - RIGHT),
           scale(mean, 0, ymax, H - BOTTOM, TOP), pos, mean, n) for pos, mean, n in profile]
    body = [yticks(ymax * 1000),
            '<polyline class="series" fill="none" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y, *_ in xy) + '"/>']
    for x, y, pos, mean, n in xy:
        body.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>tokens {pos}–{2 * pos - 1}: '
                    f'{mean * 1000:.2f} ms mean over {n} gaps</title></circle>'
                    f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{short(pos)}</text>')
    gaps = sum(n for _, _, n in profile)
    return frame("plot-itl-position", title, "".join(body), f"output-token position (log₂ buckets) — n = {gaps:,} gaps",
                 "mean gap (ms)")


def e2e_boxes(boxes: Sequence[tuple[str, Box | None]]) -> str:
    present = [(name, b) for name, b in boxes if b is not None]
    return box_plot("plot-e2e-box", "End-to-end latency per backend", present, colors([name for name, _ in boxes]),
                    ("backend", "end-to-end (s)"), lambda name, b: f"{name}: p50 {b.p50:.3f} s (n={b.count})",
                    lambda name, b: f"{name} (n={b.count:,})")


def daily_cost_bars(days: Sequence[tuple[str, Sequence[tuple[str, float]]]]) -> str:
    title = "Daily cost by backend (USD)"
    if not days:
        return empty("plot-daily-cost", title)
    backends = sorted({b for _, per in days for b, _ in per})
    color = colors(backends)
    ymax = max(sum(c for _, c in per) for _, per in days) * 1.1 or 1.0
    slot = (W - LEFT - RIGHT) / len(days)
    body = [yticks(ymax)]
    for k, (day, per) in enumerate(days):
        x = LEFT + slot * k + slot * 0.15
        rects, base = stacked_bar(x, slot * 0.7, per, ymax, color,
                                  lambda backend, cost: f"{day} {escape(backend)}: ${cost:.4f}")  # noqa: B023
        body += rects
        if slot >= 44:  # the day's total above its bar, where there is room for it
            body.append(f'<text class="total" x="{x + slot * 0.35:.1f}" y="{scale(base, 0, ymax, H - BOTTOM, TOP) - 3:.1f}" '
                        f'text-anchor="middle">${base:.3g}</text>')
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{day[5:]}</text>')
    body.append(legend(backends, color))
    return frame("plot-daily-cost", title, "".join(body), "day (UTC)", "USD")
