"""The latency-against-quality chart as a standalone SVG (no plotting library).

x: decode latency in ms per token, from 0, ticked at round numbers (ticks.py);
y: mean KL divergence against the reference on a log scale (quants span
orders of magnitude), ticked at decades or 1-2-5 steps. KL 0 has no place on
a log axis: references are drawn in a band of their own under it, labelled
"0 (reference)", as diamonds. The Pareto front (a line through the rows no
other beats on both axes) is drawn, and named in the legend, only when it
joins two or more rows. Rows without a quality figure are listed, not drawn.
"""

from __future__ import annotations

import math
from html import escape

from edgeglm.bench.report import BenchReport, BenchRow, pareto_front
from edgeglm.bench.ticks import linear_labels, linear_ticks, log_labels, log_ticks

W, H, PAD = 760, 480, 70
BAND = 36  # the reference band under the log axis
FRONT, DOT, REF = "#d62728", "#1f77b4", "#222222"


def _latency_ms(r: BenchRow) -> float:
    return 1000.0 / r.decode_tps.median if r.decode_tps.median else 0.0


def to_svg(report: BenchReport, title: str = "Latency against quality") -> str:
    if not report.complete:
        title += " (interrupted: partial)"
    timed = [r for r in report.rows if r.decode_tps.median > 0]
    rows = [r for r in timed if r.reference or r.kl_mean is not None]
    unplaced = [r for r in timed if r not in rows]
    kls = [r.kl_mean for r in rows if r.kl_mean]
    yt = log_ticks(min(kls), max(kls)) if kls else [1e-4, 1e-3, 1e-2, 1e-1]
    xt = linear_ticks(0.0, max([_latency_ms(r) for r in rows] or [1.0]))
    top, bottom = PAD, H - PAD - BAND  # the log axis; the reference band lies below
    ylo, yhi = math.log10(yt[0]), math.log10(yt[-1])

    def px(r: BenchRow) -> tuple[float, float]:
        x = PAD + (_latency_ms(r) - xt[0]) / (xt[-1] - xt[0]) * (W - 2 * PAD)
        if r.reference or not r.kl_mean:  # KL 0: the reference's band
            return x, bottom + BAND / 2
        k = math.log10(r.kl_mean or yt[0])
        return x, bottom - (k - ylo) / ((yhi - ylo) or 1) * (bottom - top)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16">{escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{top}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
        # the break between the log axis and the reference band
        f'<line x1="{PAD}" y1="{bottom}" x2="{W - PAD}" y2="{bottom}" stroke="#999" '
        'stroke-dasharray="4 3"/>',
        f'<text x="{PAD - 6}" y="{bottom + BAND / 2 + 4:.1f}" text-anchor="end">0 (ref)</text>',
        f'<text x="{W / 2}" y="{H - 24}" text-anchor="middle">'
        "decode latency (ms/token, lower is faster)</text>",
        f'<text x="18" y="{H / 2}" text-anchor="middle" transform="rotate(-90 18 {H / 2})">'
        "mean KL divergence vs reference (log)</text>",
    ]
    for v, text in zip(yt, log_labels(yt), strict=True):
        y = bottom - (math.log10(v) - ylo) / ((yhi - ylo) or 1) * (bottom - top)
        out.append(f'<text x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
        out.append(f'<line x1="{PAD}" y1="{y:.1f}" x2="{W - PAD}" y2="{y:.1f}" stroke="#eee"/>')
    for v, text in zip(xt, linear_labels(xt), strict=True):
        x = PAD + (v - xt[0]) / (xt[-1] - xt[0]) * (W - 2 * PAD)
        out.append(f'<text x="{x:.1f}" y="{H - PAD + 16}" text-anchor="middle">{text}</text>')
    front = pareto_front(rows)
    if len(front) > 1:
        pts = " ".join(f"{px(r)[0]:.1f},{px(r)[1]:.1f}" for r in sorted(front, key=_latency_ms))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{FRONT}" stroke-width="2"/>')
    on_front = {id(r) for r in front} if len(front) > 1 else set()
    for r in rows:
        x, y = px(r)
        tip = f"<title>{escape(r.label)}</title>"
        if r.reference:
            d = f"M{x:.1f},{y - 6:.1f} l6,6 l-6,6 l-6,-6 Z"
            out.append(f'<path d="{d}" fill="{REF}">{tip}</path>')
        else:
            color = FRONT if id(r) in on_front else DOT
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}">{tip}</circle>')
        out.append(f'<text x="{x + 8:.1f}" y="{y - 6:.1f}">{escape(r.label)}</text>')
    legend = [(REF, "◆ reference (KL 0)")] if any(r.reference for r in rows) else []
    if on_front:
        legend.append((FRONT, "— Pareto front"))
    for i, (color, text) in enumerate(legend):
        out.append(
            f'<text x="{W - PAD}" y="{PAD - 26 + 14 * i}" text-anchor="end" fill="{color}">'
            f"{text}</text>"
        )
    if unplaced:
        names = ", ".join(r.label for r in unplaced)
        out.append(
            f'<text x="{PAD}" y="{H - 6}" font-size="11">not drawn (no quality figure): '
            f"{escape(names)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"
