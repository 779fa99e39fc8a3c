"""Small SVG charts rendered on the server: a bar histogram and a line plot with log-x.

They return `markupsafe.Markup` (trusted SVG); every label that reaches them passes through
`html.escape`, so corpus text in a tick label stays text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

W, H, PAD = 320, 150, 30


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 1000 or abs(x) < 0.01:
        return f"{x:.1e}"
    return f"{x:.3g}"


def histogram(
    edges: Sequence[float], counts: Sequence[float], xlabel: str = "", log_x_labels: bool = False, width: int = W
) -> Markup:
    """Bars over `edges` (len(counts) + 1). `log_x_labels`: the edges are log10 values, label as 10^x."""
    if not counts or len(edges) != len(counts) + 1:
        return Markup('<p class="muted">no data</p>')
    top = max(max(counts), 1)
    n = len(counts)
    bw = (width - 2 * PAD) / n
    bars = []
    for k, c in enumerate(counts):
        h = (H - 2 * PAD) * c / top
        x = PAD + k * bw
        tip = f"{_fmt(edges[k])} – {_fmt(edges[k + 1])}: {c}"
        bars.append(
            f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{max(bw - 1, 0.5):.1f}" height="{h:.1f}">'
            f"<title>{escape(tip)}</title></rect>"
        )

    def label(v: float) -> str:
        return f"1e{v:.0f}" if log_x_labels else _fmt(v)

    ticks = "".join(
        f'<text x="{PAD + k * bw:.1f}" y="{H - PAD + 12}" text-anchor="middle">{escape(label(edges[k]))}</text>'
        for k in range(0, n + 1, max(n // 4, 1))
    )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {H}" width="{width}" height="{H}" role="img">'
        f'<g class="bars">{"".join(bars)}</g><g class="ticks">{ticks}'
        f'<text x="{PAD - 4}" y="{PAD}" text-anchor="end">{top}</text></g>'
        f'<text class="axis" x="{width / 2}" y="{H - 4}" text-anchor="middle">{escape(xlabel)}</text></svg>'
    )


def line_plot(
    series: dict[str, Sequence[tuple[float, float]]], xlabel: str, ylabel: str, log_x: bool = True, width: int = W
) -> Markup:
    """One polyline (with dots) per series of (x, y) points; x on a log2 axis by default."""
    pts = [(x, y) for s in series.values() for x, y in s if y is not None and math.isfinite(y)]
    if not pts:
        return Markup('<p class="muted">no data</p>')
    tx = (lambda v: math.log2(v)) if log_x else (lambda v: v)
    xs, ys = [tx(x) for x, _ in pts], [y for _, y in pts]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1

    def px(x: float, y: float) -> tuple[float, float]:
        return (PAD + (tx(x) - x0) / (x1 - x0) * (width - 2 * PAD), H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD))

    out = []
    for k, (name, s) in enumerate(series.items()):
        good = [(x, y) for x, y in s if y is not None and math.isfinite(y)]
        coords = [px(x, y) for x, y in sorted(good)]
        out.append(
            f'<polyline class="s{k % 4}" fill="none" points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in coords)}"/>'
        )
        out += [
            f'<circle class="s{k % 4}" cx="{a:.1f}" cy="{b:.1f}" r="3"><title>{escape(name)}: {escape(_fmt(x))}, '
            f"{escape(_fmt(y))}</title></circle>"
            for (a, b), (x, y) in zip(coords, sorted(good), strict=True)
        ]
    xt = sorted({x for x, _ in pts})
    ticks = "".join(
        f'<text x="{px(x, y0)[0]:.1f}" y="{H - PAD + 12}" text-anchor="middle">{escape(_fmt(x))}</text>' for x in xt
    )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {H}" width="{width}" height="{H}" role="img">{"".join(out)}'
        f'<g class="ticks">{ticks}<text x="{PAD - 4}" y="{PAD}" text-anchor="end">{escape(_fmt(y1))}</text>'
        f'<text x="{PAD - 4}" y="{H - PAD}" text-anchor="end">{escape(_fmt(y0))}</text></g>'
        f'<text class="axis" x="{width / 2}" y="{H - 4}" text-anchor="middle">{escape(xlabel)}</text>'
        f'<text class="axis" x="4" y="12">{escape(ylabel)}</text></svg>'
    )
