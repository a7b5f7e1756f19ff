"""The latency-against-quality chart as a standalone SVG (no plotting library).

x: decode latency in ms per token; y: mean KL divergence against the
reference, on a log scale (quants span orders of magnitude). The Pareto
front is drawn as a line; the reference sits on the bottom edge.
"""

from __future__ import annotations

import math
from html import escape

from edgeglm.bench.report import BenchReport, BenchRow, pareto_front

W, H, PAD = 760, 460, 70


def _latency_ms(r: BenchRow) -> float:
    return 1000.0 / r.decode_tps.median if r.decode_tps.median else 0.0


def to_svg(report: BenchReport, title: str = "Latency against quality") -> str:
    rows = [r for r in report.rows if r.decode_tps.median > 0]
    kls = [r.kl_mean for r in rows if r.kl_mean and r.kl_mean > 0]
    lo = math.log10(min(kls)) - 0.3 if kls else -6.0
    hi = math.log10(max(kls)) + 0.3 if kls else 0.0
    floor = lo  # the reference (KL 0) is drawn on the bottom edge
    xs = [_latency_ms(r) for r in rows] or [1.0]
    x0, x1 = 0.0, max(xs) * 1.15

    def px(r: BenchRow) -> tuple[float, float]:
        x = PAD + (_latency_ms(r) - x0) / (x1 - x0 or 1) * (W - 2 * PAD)
        k = math.log10(r.kl_mean) if r.kl_mean and r.kl_mean > 0 else floor
        y = H - PAD - (k - lo) / (hi - lo or 1) * (H - 2 * PAD)
        return x, y

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16">{escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<text x="{W / 2}" y="{H - 20}" text-anchor="middle">'
        "decode latency (ms/token, lower is faster)</text>",
        f'<text x="18" y="{H / 2}" text-anchor="middle" transform="rotate(-90 18 {H / 2})">'
        "mean KL divergence vs reference (log)</text>",
    ]
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        y = H - PAD - (e - lo) / (hi - lo or 1) * (H - 2 * PAD)
        if PAD <= y <= H - PAD:
            out.append(f'<text x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end">1e{e}</text>')
            out.append(f'<line x1="{PAD}" y1="{y:.1f}" x2="{W - PAD}" y2="{y:.1f}" stroke="#eee"/>')
    for i in range(6):
        v = x0 + (x1 - x0) * i / 5
        x = PAD + (W - 2 * PAD) * i / 5
        out.append(f'<text x="{x:.1f}" y="{H - PAD + 16}" text-anchor="middle">{v:.1f}</text>')
    front = pareto_front(rows)
    if len(front) > 1:
        pts = " ".join(f"{px(r)[0]:.1f},{px(r)[1]:.1f}" for r in sorted(front, key=_latency_ms))
        out.append(f'<polyline points="{pts}" fill="none" stroke="#d62728" stroke-width="2"/>')
    on_front = {id(r) for r in front}
    for r in rows:
        x, y = px(r)
        color = "#d62728" if id(r) in on_front else "#1f77b4"
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}">'
            f"<title>{escape(r.label)}</title></circle>"
        )
        out.append(f'<text x="{x + 8:.1f}" y="{y - 6:.1f}">{escape(r.label)}</text>')
    out.append(
        f'<text x="{W - PAD}" y="{PAD - 8}" text-anchor="end" fill="#d62728">— Pareto front</text>'
    )
    out.append("</svg>")
    return "\n".join(out) + "\n"
