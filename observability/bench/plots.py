"""The bench report's own SVG plots, drawn like observability/svg_plots.py's (same frame and
colours): E2E box plots per query pattern, the backend split over the run, and a sweep's curves."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from observability.report import Box

# The report's frame, scales, ticks, legend and palette: one look across `hybridgw report` and `hybridgw bench`.
from observability.svg_plots_frame import (
    BOTTOM,
    LEFT,
    RIGHT,
    TOP,
    H,
    W,
    box_plot,
    colors,
    empty,
    frame,
    legend,
    scale,
    stacked_bar,
    xticks,
    yticks,
)


def e2e_by_pattern(boxes: Sequence[tuple[str, Box | None]]) -> str:
    present = [(name, b) for name, b in boxes if b is not None]
    return box_plot("plot-e2e-pattern", "End-to-end latency per query pattern", present,
                    colors([name for name, _ in present]), ("query pattern", "end-to-end (s)"),
                    lambda name, b: f"{name}: p50 {b.p50:.3f} s, p95 {b.p95:.3f} s (n={b.count})", lambda name, _: name)


def backend_over_time(slots: Sequence[tuple[float, Sequence[tuple[str, int]]]]) -> str:
    title = "Requests per backend over the run (x-hybridgw-backend)"
    if not slots or not any(per for _, per in slots):
        return empty("plot-backend-time", title)
    backends = sorted({b for _, per in slots for b, _ in per})
    color = colors(backends)
    ymax = max(sum(n for _, n in per) for _, per in slots) * 1.15 or 1.0
    t_end = slots[-1][0] + (slots[-1][0] - slots[0][0]) / max(len(slots) - 1, 1)
    slot_w = (W - LEFT - RIGHT) / len(slots)
    body = [yticks(ymax)]
    for k, (start, per) in enumerate(slots):
        body += stacked_bar(LEFT + slot_w * k + slot_w * 0.1, slot_w * 0.8, per, ymax, color,
                            lambda backend, n: f"{start:.1f} s: {escape(backend)} {n}")[0]  # noqa: B023
    for i in range(5):
        v = slots[0][0] + (t_end - slots[0][0]) * i / 4
        body.append(
            f'<text x="{LEFT + (W - LEFT - RIGHT) * i / 4:.1f}" y="{H - BOTTOM + 16}" '
            f'text-anchor="middle">{v:.1f}</text>'
        )
    body.append(legend(backends, color))
    return frame("plot-backend-time", title, "".join(body), "request sent (s into the run)", "requests")


def load_curve(
    plot_id: str,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
) -> str:
    """Lines over the load levels of a sweep (x: offered rate or concurrency)."""
    points = [p for _, line in series for p in line]
    if not points:
        return empty(plot_id, title)
    xmax = max(x for x, _ in points) * 1.05 or 1.0
    ymax = max(y for _, y in points) * 1.15 or 1.0
    color = colors([name for name, _ in series])
    body = [yticks(ymax)]
    for name, line in series:
        xy = [(scale(x, 0, xmax, LEFT, W - RIGHT), scale(y, 0, ymax, H - BOTTOM, TOP)) for x, y in line]
        body.append(
            f'<polyline class="series" fill="none" stroke="{color[name]}" points="'
            + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            + '"/>'
        )
        body += [
            f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3"><title>{escape(name)}: {v:.3g} at '
            f"{u:g}</title></circle>"
            for (x, y), (u, v) in zip(xy, line)
        ]
    body.append(xticks(xmax))
    body.append(legend([name for name, _ in series], color))
    return frame(plot_id, title, "".join(body), xlabel, ylabel)
