"""The report's plots as inline SVG strings (no JS, no external assets): ISL×OSL heat map, TTFT vs
input length with its fitted line, ITL vs output position, e2e box plots, daily cost by backend."""
from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from observability.report import Box, Fit

W, H = 640, 340
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 30, 50
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#9c755f")


def _scale(v: float, d0: float, d1: float, r0: float, r1: float) -> float:
    return r0 if d1 == d0 else r0 + (v - d0) * (r1 - r0) / (d1 - d0)


def _short(n: float) -> str:
    """Token counts: 1024 → "1k", 16384 → "16k" (buckets are powers of two)."""
    for div, suffix in ((1 << 20, "M"), (1 << 10, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:g}"


def _colors(names: Sequence[str]) -> dict[str, str]:
    """One color per backend, the same in every plot."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(set(names)))}


def _xticks(xmax: float) -> str:
    out = []
    for i in range(5):
        v = xmax * i / 4
        x = _scale(v, 0, xmax, LEFT, W - RIGHT)
        out.append(f'<line x1="{x:.1f}" y1="{H - BOTTOM}" x2="{x:.1f}" y2="{H - BOTTOM + 4}" class="axis"/>'
                   f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{_short(round(v))}</text>')
    return "".join(out)


def _frame(plot_id: str, title: str, body: str, xlabel: str, ylabel: str) -> str:
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


def _empty(plot_id: str, title: str) -> str:
    body = f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="nodata">no data in this period</text>'
    return _frame(plot_id, title, body, "", "")


def _yticks(top: float, fmt: str = "{:.3g}") -> str:
    out = []
    for i in range(5):
        v = top * i / 4
        y = _scale(v, 0, top, H - BOTTOM, TOP)
        out.append(f'<line x1="{LEFT - 4}" y1="{y:.1f}" x2="{LEFT}" y2="{y:.1f}" class="axis"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{fmt.format(v)}</text>')
    return "".join(out)


def heatmap(matrix: Sequence[Sequence[int]], edges: Sequence[int]) -> str:
    """Rows: input-length buckets (y, upwards); columns: output-length buckets (x)."""
    title = "Requests by input × output length (ISL × OSL)"
    used = [i for i, row in enumerate(matrix) if any(row)] + [j for row in matrix for j, c in enumerate(row) if c]
    if not used:
        return _empty("plot-isl-osl", title)
    lo, hi = min(used), max(used)
    n = hi - lo + 1
    top = max(max(row) for row in matrix)
    cw, ch = (W - LEFT - RIGHT) / n, (H - TOP - BOTTOM) / n
    cells, labels = [], []
    for i in range(lo, hi + 1):
        for j in range(lo, hi + 1):
            count = matrix[i][j]
            t = math.log1p(count) / math.log1p(top)
            color = f"rgb({int(247 - 239 * t)},{int(251 - 203 * t)},{int(255 - 148 * t)})"
            x, y = LEFT + (j - lo) * cw, H - BOTTOM - (i - lo + 1) * ch
            cells.append(f'<rect class="cell" x="{x:.1f}" y="{y:.1f}" width="{cw:.1f}" height="{ch:.1f}" '
                         f'fill="{color}"><title>ISL ≥{edges[i]}, OSL ≥{edges[j]}: {count}</title></rect>')
        labels.append(f'<text x="{LEFT - 6}" y="{H - BOTTOM - (i - lo + 0.5) * ch + 4:.1f}" '
                      f'text-anchor="end">{_short(edges[i])}</text>'
                      f'<text x="{LEFT + (i - lo + 0.5) * cw:.1f}" y="{H - BOTTOM + 16}" '
                      f'text-anchor="middle">{_short(edges[i])}</text>')
    return _frame("plot-isl-osl", title, "".join(cells + labels), "output tokens (bucket start)",
                  "input tokens (bucket start)")


def ttft_scatter(points: Sequence[tuple[int, float]], fit: Fit | None, max_isl: float) -> str:
    title = "TTFT vs input length"
    if not points and fit is None:
        return _empty("plot-ttft-isl", title)
    xmax = max([p[0] for p in points] + [max_isl, 1])
    line_end = fit.intercept_s + fit.slope_s_per_token * xmax if fit else 0.0
    ymax = max([p[1] for p in points] + [line_end, fit.intercept_s if fit else 0.0, 1e-3]) * 1.1
    body = [_yticks(ymax * 1000, "{:.0f}")]
    for isl, ttft in points:
        body.append(f'<circle class="point" cx="{_scale(isl, 0, xmax, LEFT, W - RIGHT):.1f}" '
                    f'cy="{_scale(ttft, 0, ymax, H - BOTTOM, TOP):.1f}" r="2.5"/>')
    if fit is not None:
        y0 = _scale(fit.intercept_s, 0, ymax, H - BOTTOM, TOP)
        y1 = _scale(line_end, 0, ymax, H - BOTTOM, TOP)
        body.append(f'<line class="fit" x1="{LEFT}" y1="{y0:.1f}" x2="{W - RIGHT}" y2="{y1:.1f}"/>'
                    f'<text x="{W - RIGHT - 4}" y="{TOP + 14}" text-anchor="end" class="fitlabel">'
                    f'fit: {fit.slope_s_per_token * 1e6:.3g} ms per 1k input tokens + '
                    f'{fit.intercept_s * 1e3:.3g} ms (n={fit.n})</text>')
    body.append(_xticks(xmax))
    return _frame("plot-ttft-isl", title, "".join(body), "input tokens", "TTFT (ms)")


def itl_by_position(profile: Sequence[tuple[int, float, int]]) -> str:
    title = "Inter-token latency vs output-token position"
    if not profile:
        return _empty("plot-itl-position", title)
    xmax = max(math.log2(p[0]) for p in profile) + 1
    ymax = max(p[1] for p in profile) * 1.2
    xy = [(_scale(math.log2(pos), 0, xmax, LEFT + 10, W - RIGHT),
           _scale(mean, 0, ymax, H - BOTTOM, TOP), pos, mean, n) for pos, mean, n in profile]
    body = [_yticks(ymax * 1000, "{:.1f}"),
            '<polyline class="series" fill="none" points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y, *_ in xy) + '"/>']
    for x, y, pos, mean, n in xy:
        body.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3.5"><title>tokens {pos}–{2 * pos - 1}: '
                    f'{mean * 1000:.2f} ms mean over {n} gaps</title></circle>'
                    f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{_short(pos)}</text>')
    return _frame("plot-itl-position", title, "".join(body), "output-token position (log₂ buckets)",
                  "mean gap (ms)")


def e2e_boxes(boxes: Sequence[tuple[str, Box | None]]) -> str:
    title = "End-to-end latency per backend"
    present = [(name, b) for name, b in boxes if b is not None]
    if not present:
        return _empty("plot-e2e-box", title)
    ymax = max(b.p95 for _, b in present) * 1.1 or 1.0
    slot = (W - LEFT - RIGHT) / len(present)
    color = _colors([name for name, _ in boxes])
    body = [_yticks(ymax, "{:.2f}")]
    for k, (name, b) in enumerate(present):
        cx, half = LEFT + slot * (k + 0.5), min(slot * 0.3, 40)
        y = {q: _scale(getattr(b, q), 0, ymax, H - BOTTOM, TOP) for q in ("p5", "p25", "p50", "p75", "p95")}
        body.append(
            f'<g class="box"><title>{escape(name)}: p50 {b.p50:.3f} s (n={b.count})</title>'
            f'<line x1="{cx:.1f}" y1="{y["p5"]:.1f}" x2="{cx:.1f}" y2="{y["p95"]:.1f}" class="whisker"/>'
            f'<rect x="{cx - half:.1f}" y="{y["p75"]:.1f}" width="{2 * half:.1f}" '
            f'height="{max(y["p25"] - y["p75"], 1):.1f}" fill="{color[name]}"/>'
            f'<line x1="{cx - half:.1f}" y1="{y["p50"]:.1f}" x2="{cx + half:.1f}" y2="{y["p50"]:.1f}" class="median"/>'
            f'</g><text x="{cx:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{escape(name)}</text>'
        )
    return _frame("plot-e2e-box", title, "".join(body), "backend", "end-to-end (s)")


def daily_cost_bars(days: Sequence[tuple[str, Sequence[tuple[str, float]]]]) -> str:
    title = "Daily cost by backend (USD)"
    if not days:
        return _empty("plot-daily-cost", title)
    backends = sorted({b for _, per in days for b, _ in per})
    color = _colors(backends)
    ymax = max(sum(c for _, c in per) for _, per in days) * 1.1 or 1.0
    slot = (W - LEFT - RIGHT) / len(days)
    body = [_yticks(ymax, "{:.3g}")]
    for k, (day, per) in enumerate(days):
        base, x = 0.0, LEFT + slot * k + slot * 0.15
        for backend, cost in per:
            y0, y1 = _scale(base, 0, ymax, H - BOTTOM, TOP), _scale(base + cost, 0, ymax, H - BOTTOM, TOP)
            body.append(f'<rect class="bar" x="{x:.1f}" y="{y1:.1f}" width="{slot * 0.7:.1f}" '
                        f'height="{max(y0 - y1, 0.5):.1f}" fill="{color[backend]}">'
                        f'<title>{day} {escape(backend)}: ${cost:.4f}</title></rect>')
            base += cost
        body.append(f'<text x="{x + slot * 0.35:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{day[5:]}</text>')
    for i, backend in enumerate(backends):
        body.append(f'<rect x="{LEFT + 10 + 110 * i}" y="{TOP - 4}" width="10" height="10" fill="{color[backend]}"/>'
                    f'<text x="{LEFT + 24 + 110 * i}" y="{TOP + 5}">{escape(backend)}</text>')
    return _frame("plot-daily-cost", title, "".join(body), "day (UTC)", "USD")
